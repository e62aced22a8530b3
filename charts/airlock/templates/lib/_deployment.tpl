{{/*
A service's Deployment. Params: ctx, component.
The component's own files and environment come from "airlock.<component>.files" (a list of
airlock.lib.fileMount dicts) and "airlock.<component>.env" (extra env entries), defined in
templates/<component>/_helpers.tpl.
*/}}
{{- define "airlock.lib.deployment" -}}
{{- $svc := include "airlock.values" . | fromYaml -}}
{{- $meta := include "airlock.component" . | fromYaml -}}
{{- if $svc.enabled -}}
{{- $files := (include (printf "airlock.%s.files" .component) .ctx | fromYaml).files | default list -}}
{{- /* Every stage: its own signing ring and the mesh's public keys (airlock.core.authenticity). */ -}}
{{- with include "airlock.lib.secretFileMount" (dict "volume" "mesh-keys" "block" $svc.meshKeys "env" "AIRLOCK_MESH_SIGNING_KEYS_FILE") -}}
{{- $files = append $files (fromYaml .) -}}
{{- end -}}
{{- with include "airlock.lib.configFileMount" (dict "ctx" .ctx "component" .component "what" "mesh-trust" "block" .ctx.Values.global.mesh.trust "env" "AIRLOCK_MESH_TRUST_FILE") -}}
{{- $files = append $files (fromYaml .) -}}
{{- end -}}
{{- $checksums := dict "kafka" (include "airlock.lib.kafkaChecksum" .) -}}
{{- range $files -}}
{{- $_ := set $checksums .volume.name .checksum -}}
{{- end -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "airlock.resourceName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "airlock.labels" . | nindent 4 }}
  {{- with $svc.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if not $svc.autoscaling.enabled }}
  replicas: {{ $svc.replicas | int }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      # One replica at a time: each change of membership rebalances the consumer group.
      maxSurge: 1
      maxUnavailable: 0
  selector:
    matchLabels:
      {{- include "airlock.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "airlock.selectorLabels" . | nindent 8 }}
        app.kubernetes.io/part-of: airlock
        {{- with $svc.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        {{- range $name, $sum := $checksums }}
        checksum/{{ $name }}: {{ $sum | quote }}
        {{- end }}
        {{- with $svc.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "airlock.serviceAccountName" (dict "ctx" .ctx "component" .component "svc" $svc) }}
      {{- include "airlock.lib.podSecurity" . | nindent 6 }}
      terminationGracePeriodSeconds: {{ $svc.terminationGracePeriodSeconds | int }}
      {{- with $svc.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $svc.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "airlock.image" (dict "ctx" .ctx "image" $svc.image) | quote }}
          imagePullPolicy: {{ .ctx.Values.global.image.pullPolicy }}
          command:
            - faststream
            - run
            - {{ $meta.module }}
            - --host
            - 0.0.0.0
            - --port
            - {{ $svc.port | int | quote }}
          ports:
            - name: http
              containerPort: {{ $svc.port | int }}
              protocol: TCP
          env:
            {{- include "airlock.lib.commonEnv" . | nindent 12 }}
            - name: {{ $meta.envPrefix }}_SHUTDOWN_GRACE_S
              value: {{ $svc.shutdownGraceSeconds | toString | quote }}
            {{- range $files }}
            {{- with .env }}
            - {{ toYaml . | nindent 14 | trim }}
            {{- end }}
            {{- end }}
            {{- with (include (printf "airlock.%s.env" .component) .ctx | fromYaml).env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- with $svc.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          startupProbe:
            httpGet:
              path: /healthz
              port: http
            {{- toYaml $svc.startupProbe | nindent 12 }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            {{- toYaml $svc.livenessProbe | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            {{- toYaml $svc.readinessProbe | nindent 12 }}
          {{- with $svc.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          securityContext:
            {{- toYaml .ctx.Values.containerSecurityContext | nindent 12 }}
          volumeMounts:
            {{- include "airlock.lib.commonVolumeMounts" . | nindent 12 }}
            {{- range $files }}
            - {{ toYaml .mount | nindent 14 | trim }}
            {{- end }}
            {{- with (include (printf "airlock.%s.volumes" .component) .ctx | fromYaml).mounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- with $svc.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        {{- include "airlock.lib.commonVolumes" . | nindent 8 }}
        {{- range $files }}
        - {{ toYaml .volume | nindent 10 | trim }}
        {{- end }}
        {{- with (include (printf "airlock.%s.volumes" .component) .ctx | fromYaml).volumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with $svc.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
{{- end }}
{{- end -}}
