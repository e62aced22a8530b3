{{/* Ingest's file: the clients file (clients, HMAC keys, grants, limits; a Secret). */}}
{{- define "airlock.ingest.files" -}}
{{- $files := list -}}
{{- with include "airlock.lib.secretFileMount" (dict "volume" "clients" "block" .Values.ingest.clients "env" "AIRLOCK_INGEST_CLIENTS_FILE") -}}
{{- $files = append $files (fromYaml .) -}}
{{- end -}}
{{- toYaml (dict "files" $files) -}}
{{- end -}}

{{- define "airlock.ingest.env" -}}
{{- toYaml (dict "env" list) -}}
{{- end -}}

{{- define "airlock.ingest.volumes" -}}
{{- toYaml (dict "volumes" list "mounts" list) -}}
{{- end -}}
