{{/*
Ingest's files: the clients file (clients, HMAC keys, grants, limits; a Secret) and the
llm-worker's price table (the same ConfigMap), so a cost budget reserves what a request may cost.
*/}}
{{- define "airlock.ingest.files" -}}
{{- $files := list -}}
{{- with include "airlock.lib.secretFileMount" (dict "volume" "clients" "block" .Values.ingest.clients "env" "AIRLOCK_INGEST_CLIENTS_FILE") -}}
{{- $files = append $files (fromYaml .) -}}
{{- end -}}
{{- with include "airlock.lib.configFileMount" (dict "ctx" . "component" "llm-worker" "what" "prices" "block" .Values.llmWorker.prices "env" "AIRLOCK_INGEST_PRICES_FILE") -}}
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
