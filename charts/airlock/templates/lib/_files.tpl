{{/*
Files mounted into a pod from a Secret or a ConfigMap, as one dict with the pieces a pod spec
needs: {env, volume, mount, checksum}. Mounting the directory (not a subPath) lets Kubernetes
refresh the file in place when the Secret or ConfigMap changes.
Params:
  volume     = volume name (also the directory under /etc/airlock)
  kind       = secret | configMap
  source     = name of the Secret or ConfigMap
  key        = the one key to mount; empty mounts every key (a directory of files)
  env        = variable that receives the path (the file, or the directory when key is empty);
               empty: none (the path is then part of the contract, e.g. referenced from a config file)
  checksum   = text whose digest rolls the pods when it changes
*/}}
{{- define "airlock.lib.fileMount" -}}
{{- $dir := printf "/etc/airlock/%s" .volume -}}
{{- $source := dict -}}
{{- if eq .kind "secret" -}}
{{- $source = dict "secretName" .source "defaultMode" 288 -}}
{{- else -}}
{{- $source = dict "name" .source "defaultMode" 292 -}}
{{- end -}}
{{- if .key -}}
{{- $_ := set $source "items" (list (dict "key" .key "path" .key)) -}}
{{- end -}}
{{- $path := ternary (printf "%s/%s" $dir .key) $dir (not (empty .key)) }}
{{- if .env }}
env:
  name: {{ .env }}
  value: {{ $path | quote }}
{{- end }}
volume:
  name: {{ .volume }}
  {{ .kind }}:
    {{- toYaml $source | nindent 4 }}
mount:
  name: {{ .volume }}
  mountPath: {{ $dir }}
  readOnly: true
checksum: {{ .checksum | sha256sum | quote }}
{{- end -}}

{{/*
A config file the chart can either render from values (`content`) or take from an existing
ConfigMap. Params: ctx, component, what (e.g. policy), block ({existingConfigMap, key, content}).
Returns the name of the ConfigMap to mount, or "" when neither is set.
*/}}
{{- define "airlock.lib.configSource" -}}
{{- if .block.existingConfigMap -}}
{{- .block.existingConfigMap -}}
{{- else if .block.content -}}
{{- printf "%s-%s" (include "airlock.resourceName" .) .what | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The ConfigMap rendered from `content`, when there is content and no existing ConfigMap. */}}
{{- define "airlock.lib.configMap" -}}
{{- if and .block.content (not .block.existingConfigMap) }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "airlock.lib.configSource" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "airlock.labels" . | nindent 4 }}
data:
  {{ .block.key }}: |
    {{- toYaml .block.content | nindent 4 }}
{{- end }}
{{- end -}}

{{/* fileMount params for such a config file. Params: as airlock.lib.configSource, plus env. */}}
{{- define "airlock.lib.configFileMount" -}}
{{- $source := include "airlock.lib.configSource" . -}}
{{- if $source -}}
{{- $checksum := ternary (printf "existing:%s/%s" $source .block.key) (toYaml .block.content) (not (empty .block.existingConfigMap)) -}}
{{- include "airlock.lib.fileMount" (dict "volume" .what "kind" "configMap" "source" $source "key" .block.key "env" .env "checksum" $checksum) -}}
{{- end -}}
{{- end -}}

{{/* fileMount for a key of an existing Secret. Params: volume, block ({existingSecret, key}), env. */}}
{{- define "airlock.lib.secretFileMount" -}}
{{- if .block.existingSecret -}}
{{- $key := .block.key | default "" -}}
{{- include "airlock.lib.fileMount" (dict "volume" .volume "kind" "secret" "source" .block.existingSecret "key" $key "env" .env "checksum" (printf "existing:%s/%s" .block.existingSecret $key)) -}}
{{- end -}}
{{- end -}}

{{/*
A directory of config files: an existing ConfigMap, or `files` (file name → document) rendered
into one; every key becomes a file. Params: ctx, component, what, block ({existingConfigMap,
files}), env (receives the directory).
*/}}
{{- define "airlock.lib.configDirSource" -}}
{{- if .block.existingConfigMap -}}
{{- .block.existingConfigMap -}}
{{- else if .block.files -}}
{{- printf "%s-%s" (include "airlock.resourceName" .) .what | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "airlock.lib.configDirMap" -}}
{{- if and .block.files (not .block.existingConfigMap) }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "airlock.lib.configDirSource" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "airlock.labels" . | nindent 4 }}
data:
  {{- range $name, $document := .block.files }}
  {{ $name }}: |
    {{- toYaml $document | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{- define "airlock.lib.configDirMount" -}}
{{- $source := include "airlock.lib.configDirSource" . -}}
{{- if $source -}}
{{- $checksum := ternary (printf "existing:%s" $source) (toYaml .block.files) (not (empty .block.existingConfigMap)) -}}
{{- include "airlock.lib.fileMount" (dict "volume" .what "kind" "configMap" "source" $source "key" "" "env" .env "checksum" $checksum) -}}
{{- end -}}
{{- end -}}
