{{/*
Pieces shared by every pod of the chart (services, provisioning Job, audit replay CronJob):
Kafka and topic settings, telemetry, the hardened security contexts and the writable /tmp.
*/}}

{{/* Environment every Airlock process reads. Params: ctx, component. */}}
{{- define "airlock.lib.commonEnv" -}}
{{- $kafka := .ctx.Values.global.kafka -}}
{{- $topics := .ctx.Values.topics -}}
- name: AIRLOCK_KAFKA_BOOTSTRAP
  value: {{ $kafka.bootstrapServers | quote }}
- name: AIRLOCK_KAFKA_SECURITY_PROTOCOL
  value: {{ $kafka.securityProtocol | quote }}
- name: AIRLOCK_KAFKA_TOPIC_PREFIX
  value: {{ $kafka.topicPrefix | quote }}
{{- if hasPrefix "SASL" $kafka.securityProtocol }}
{{- $secret := index $kafka.sasl.credentials .component }}
- name: AIRLOCK_KAFKA_SASL_MECHANISM
  value: {{ $kafka.sasl.mechanism | quote }}
- name: AIRLOCK_KAFKA_SASL_USERNAME
{{- if $kafka.sasl.usernameKey }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $kafka.sasl.usernameKey }}
{{- else }}
  value: {{ include "airlock.kafkaPrincipal" .component | quote }}
{{- end }}
- name: AIRLOCK_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $kafka.sasl.passwordKey }}
{{- end }}
{{- if $kafka.tls.caSecret }}
- name: AIRLOCK_KAFKA_SSL_CAFILE
  value: {{ printf "/etc/airlock/kafka-ca/%s" $kafka.tls.caKey | quote }}
{{- end }}
{{- range $key, $value := $topics }}
- name: {{ printf "AIRLOCK_TOPICS_%s" ($key | snakecase | upper) }}
  value: {{ $value | int64 | quote }}
{{- end }}
{{- range $key, $value := .ctx.Values.anomalies }}
- name: {{ printf "AIRLOCK_ANOMALY_%s" ($key | snakecase | upper) }}
  value: {{ $value | toString | quote }}
{{- end }}
- name: AIRLOCK_TELEMETRY_MAX_LABEL_VALUES
  value: {{ .ctx.Values.metrics.maxLabelValues | int64 | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "airlock-%s" .component | quote }}
{{- if .ctx.Values.global.otlp.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .ctx.Values.global.otlp.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: http/protobuf
{{- else }}
- name: OTEL_SDK_DISABLED
  value: "true"
{{- end }}
# The root filesystem is read-only: libraries that cache under $HOME write to /tmp instead.
- name: HOME
  value: /tmp
{{- end -}}

{{/* Volumes every pod has: /tmp, and the Kafka CA when one is configured. Params: ctx. */}}
{{- define "airlock.lib.commonVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .ctx.Values.tmpVolume.sizeLimit }}
{{- with .ctx.Values.global.kafka.tls }}
{{- if .caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .caSecret }}
    defaultMode: 292
    items:
      - key: {{ .caKey }}
        path: {{ .caKey }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "airlock.lib.commonVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .ctx.Values.global.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/airlock/kafka-ca
  readOnly: true
{{- end }}
{{- end -}}

{{/* Text whose digest rolls every pod when a referenced Secret changes name or key. */}}
{{- define "airlock.lib.kafkaChecksum" -}}
{{- $kafka := .ctx.Values.global.kafka -}}
{{- printf "%s|%s|%s|%s|%s" $kafka.securityProtocol (index $kafka.sasl.credentials .component | default "") $kafka.sasl.usernameKey $kafka.sasl.passwordKey $kafka.tls.caSecret | sha256sum -}}
{{- end -}}

{{/* Pod-level spec fields shared by every pod. Params: ctx. */}}
{{- define "airlock.lib.podSecurity" -}}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- toYaml .ctx.Values.podSecurityContext | nindent 2 }}
{{- with .ctx.Values.global.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end -}}
