{{/* A cell of files/topics.yaml: a literal, or {setting: X} for topics.X. Params: ctx, value. */}}
{{- define "airlock.topics.value" -}}
{{- if kindIs "map" .value -}}
{{- $key := .value.setting -}}
{{- if not (hasKey .ctx.Values.topics $key) -}}
{{- fail (printf "files/topics.yaml refers to topics.%s, which values.yaml lacks: add it (see TopicSettings)" $key) -}}
{{- end -}}
{{- index .ctx.Values.topics $key | int64 -}}
{{- else -}}
{{- .value -}}
{{- end -}}
{{- end -}}

{{/* `--client <id>` for each of .Values.clients, as a YAML list (the provisioning Job's args). */}}
{{- define "airlock.topics.clientArgs" -}}
{{- $args := list -}}
{{- range .Values.clients -}}
{{- $args = concat $args (list "--client" .) -}}
{{- end -}}
{{- toYaml $args -}}
{{- end -}}
