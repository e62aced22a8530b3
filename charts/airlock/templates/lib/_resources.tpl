{{/*
The other per-service resources. Every helper takes (dict "ctx" . "component" "<service>") and
renders nothing when the service is disabled.
*/}}

{{- define "airlock.lib.serviceAccount" -}}
{{- $svc := include "airlock.values" . | fromYaml -}}
{{- if and $svc.enabled $svc.serviceAccount.create -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "airlock.serviceAccountName" (dict "ctx" .ctx "component" .component "svc" $svc) }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "airlock.labels" . | nindent 4 }}
  {{- with $svc.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
# The services never call the Kubernetes API.
automountServiceAccountToken: false
{{- end }}
{{- end -}}

{{/* The health and metrics port (/healthz, /readyz, /metrics); no traffic flows through it. */}}
{{- define "airlock.lib.service" -}}
{{- $svc := include "airlock.values" . | fromYaml -}}
{{- if $svc.enabled -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "airlock.resourceName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "airlock.labels" . | nindent 4 }}
  {{- with $svc.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $svc.service.type }}
  ports:
    - name: http
      port: {{ $svc.port | int }}
      targetPort: http
      protocol: TCP
  selector:
    {{- include "airlock.selectorLabels" . | nindent 4 }}
{{- end }}
{{- end -}}

{{- define "airlock.lib.podDisruptionBudget" -}}
{{- $svc := include "airlock.values" . | fromYaml -}}
{{- if and $svc.enabled $svc.podDisruptionBudget.enabled -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "airlock.resourceName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "airlock.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ $svc.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "airlock.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/* CPU-based HorizontalPodAutoscaler: autoscaling.enabled and keda.enabled false. */}}
{{- define "airlock.lib.hpa" -}}
{{- $svc := include "airlock.values" . | fromYaml -}}
{{- if and $svc.enabled $svc.autoscaling.enabled (not .ctx.Values.keda.enabled) -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "airlock.resourceName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "airlock.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "airlock.resourceName" . }}
  minReplicas: {{ $svc.autoscaling.minReplicas | int }}
  maxReplicas: {{ $svc.autoscaling.maxReplicas | int }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $svc.autoscaling.targetCPUUtilizationPercentage | int }}
{{- end }}
{{- end -}}

{{/*
KEDA ScaledObject on the consumer group's lag: one kafka trigger per input topic, all with the
group the service consumes in (airlock-<service>). maxReplicaCount is at most topics.partitions
(checked in airlock.validate), and allowIdleConsumers stays false so KEDA itself never goes
above the partition count either.
*/}}
{{- define "airlock.lib.scaledObject" -}}
{{- $svc := include "airlock.values" . | fromYaml -}}
{{- $meta := include "airlock.component" . | fromYaml -}}
{{- $kafka := .ctx.Values.global.kafka -}}
{{- if and $svc.enabled $svc.autoscaling.enabled .ctx.Values.keda.enabled -}}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ include "airlock.resourceName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "airlock.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "airlock.resourceName" . }}
  minReplicaCount: {{ $svc.autoscaling.minReplicas | int }}
  maxReplicaCount: {{ $svc.autoscaling.maxReplicas | int }}
  pollingInterval: {{ .ctx.Values.keda.pollingInterval | int }}
  cooldownPeriod: {{ .ctx.Values.keda.cooldownPeriod | int }}
  triggers:
    {{- range $meta.inputs }}
    - type: kafka
      metadata:
        bootstrapServers: {{ $kafka.bootstrapServers | quote }}
        consumerGroup: {{ include "airlock.consumerGroup" $ | quote }}
        topic: {{ printf "%s%s" $kafka.topicPrefix . | quote }}
        lagThreshold: {{ $svc.autoscaling.lagThreshold | int64 | quote }}
        activationLagThreshold: {{ $svc.autoscaling.activationLagThreshold | int64 | quote }}
        # The stages start a new group at the earliest offset; count lag the same way.
        offsetResetPolicy: earliest
        allowIdleConsumers: "false"
        {{- if hasPrefix "SASL" $kafka.securityProtocol }}
        sasl: {{ get (dict "PLAIN" "plaintext" "SCRAM-SHA-256" "scram_sha256" "SCRAM-SHA-512" "scram_sha512") $kafka.sasl.mechanism | quote }}
        {{- end }}
        {{- if has $kafka.securityProtocol (list "SSL" "SASL_SSL") }}
        tls: enable
        {{- end }}
      {{- if include "airlock.lib.kedaAuthNeeded" $.ctx }}
      authenticationRef:
        name: {{ include "airlock.resourceName" $ }}-kafka
      {{- end }}
    {{- end }}
{{- end }}
{{- end -}}

{{/* Non-empty when KEDA needs credentials or a CA to reach Kafka. Params: root context. */}}
{{- define "airlock.lib.kedaAuthNeeded" -}}
{{- $kafka := .Values.global.kafka -}}
{{- if or (hasPrefix "SASL" $kafka.securityProtocol) $kafka.tls.caSecret -}}
true
{{- end -}}
{{- end -}}

{{/*
NetworkPolicy: ingress only on the health/metrics port; egress only to DNS, the Kafka ports,
the OTLP endpoint's port, and whatever `extraEgress` (per pod kind) adds. Params: ctx,
component, ingressPort (empty: no ingress at all), extraEgress, extraIngress.
*/}}
{{- define "airlock.lib.networkPolicy" -}}
{{- $np := .ctx.Values.networkPolicy -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "airlock.resourceName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "airlock.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "airlock.selectorLabels" . | nindent 6 }}
  policyTypes:
    - Ingress
    - Egress
  {{- $ingress := .extraIngress | default list }}
  {{- if .ingressPort }}
  {{- $rule := dict "ports" (list (dict "port" (int .ingressPort) "protocol" "TCP")) }}
  {{- with $np.metrics.from }}
  {{- $_ := set $rule "from" . }}
  {{- end }}
  {{- $ingress = prepend $ingress $rule }}
  {{- end }}
  ingress:
    {{- toYaml $ingress | nindent 4 }}
  egress:
    - ports:
        {{- range $np.dns.ports }}
        - port: {{ . | int }}
          protocol: UDP
        - port: {{ . | int }}
          protocol: TCP
        {{- end }}
      {{- with $np.dns.to }}
      to:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    - ports:
        {{- range (include "airlock.kafkaPorts" .ctx | fromJsonArray) }}
        - port: {{ . | int }}
          protocol: TCP
        {{- end }}
      {{- with $np.kafka.to }}
      to:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- if .ctx.Values.global.otlp.endpoint }}
    - ports:
        - port: {{ include "airlock.otlpPort" .ctx | int }}
          protocol: TCP
      {{- with $np.telemetry.to }}
      to:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
    {{- with .extraEgress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/* A service's NetworkPolicy; the llm-worker alone adds its model endpoints. */}}
{{- define "airlock.lib.serviceNetworkPolicy" -}}
{{- $svc := include "airlock.values" . | fromYaml -}}
{{- if and $svc.enabled .ctx.Values.networkPolicy.enabled -}}
{{- $egress := $svc.networkPolicy.extraEgress | default list -}}
{{- with $svc.modelEndpoints -}}
{{- $ports := list -}}
{{- range .ports -}}
{{- $ports = append $ports (dict "port" (int .) "protocol" "TCP") -}}
{{- end -}}
{{- $rule := dict "ports" $ports -}}
{{- if .to -}}
{{- $_ := set $rule "to" .to -}}
{{- end -}}
{{- $egress = prepend $egress $rule -}}
{{- end -}}
{{- include "airlock.lib.networkPolicy" (dict "ctx" .ctx "component" .component "ingressPort" $svc.port "extraEgress" $egress "extraIngress" $svc.networkPolicy.extraIngress) -}}
{{- end }}
{{- end -}}
