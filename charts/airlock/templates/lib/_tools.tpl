{{/*
Pods that run the `airlock` command line (image airlock/cli) with the services' Kafka wiring:
the topic provisioning Job and the audit replay CronJob. Params: ctx, component, args,
resources, serviceAccountName, and optionally env, volumes, mounts (lists added to the common ones).
*/}}
{{- define "airlock.lib.toolPodSpec" -}}
serviceAccountName: {{ .serviceAccountName }}
{{ include "airlock.lib.podSecurity" . }}
restartPolicy: Never
containers:
  - name: {{ .component }}
    image: {{ include "airlock.image" (dict "ctx" .ctx "image" .ctx.Values.cli.image) | quote }}
    imagePullPolicy: {{ .ctx.Values.global.image.pullPolicy }}
    command: ["airlock"]
    args:
      {{- toYaml .args | nindent 6 }}
    env:
      {{- include "airlock.lib.commonEnv" . | nindent 6 }}
      {{- with .env }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- with .resources }}
    resources:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    securityContext:
      {{- toYaml .ctx.Values.containerSecurityContext | nindent 6 }}
    volumeMounts:
      {{- include "airlock.lib.commonVolumeMounts" . | nindent 6 }}
      {{- with .mounts }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
volumes:
  {{- include "airlock.lib.commonVolumes" . | nindent 2 }}
  {{- with .volumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* A ServiceAccount without API access for a tool pod. Params: ctx, component, annotations. */}}
{{- define "airlock.lib.toolServiceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "airlock.resourceName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "airlock.labels" . | nindent 4 }}
  {{- with .annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
{{- end -}}
