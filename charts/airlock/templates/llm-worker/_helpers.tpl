{{/*
The llm-worker's files: the routing table and the price table (ConfigMaps), and the keys of the
routing table's targets (a Secret mounted as /etc/airlock/provider-keys/, one file per key:
targets name theirs with `api_key_file: /etc/airlock/provider-keys/<key>`). The default
target's key is a variable.
*/}}
{{- define "airlock.llm-worker.files" -}}
{{- $svc := .Values.llmWorker -}}
{{- $files := list -}}
{{- with include "airlock.lib.configFileMount" (dict "ctx" . "component" "llm-worker" "what" "routes" "block" $svc.routes "env" "AIRLOCK_LLM_WORKER_ROUTES_FILE") -}}
{{- $files = append $files (fromYaml .) -}}
{{- end -}}
{{- with include "airlock.lib.configFileMount" (dict "ctx" . "component" "llm-worker" "what" "prices" "block" $svc.prices "env" "AIRLOCK_LLM_WORKER_PRICES_FILE") -}}
{{- $files = append $files (fromYaml .) -}}
{{- end -}}
{{- with include "airlock.lib.secretFileMount" (dict "volume" "provider-keys" "block" $svc.providerKeys "env" "") -}}
{{- $files = append $files (fromYaml .) -}}
{{- end -}}
{{- toYaml (dict "files" $files) -}}
{{- end -}}

{{- define "airlock.llm-worker.env" -}}
{{- $openai := .Values.llmWorker.openai -}}
{{- $env := list -}}
{{- if $openai.existingSecret -}}
{{- $env = append $env (dict "name" "AIRLOCK_LLM_WORKER_OPENAI_API_KEY" "valueFrom" (dict "secretKeyRef" (dict "name" $openai.existingSecret "key" $openai.apiKeyKey))) -}}
{{- end -}}
{{- if $openai.baseUrl -}}
{{- $env = append $env (dict "name" "AIRLOCK_LLM_WORKER_OPENAI_BASE_URL" "value" $openai.baseUrl) -}}
{{- end -}}
{{- toYaml (dict "env" $env) -}}
{{- end -}}

{{- define "airlock.llm-worker.volumes" -}}
{{- toYaml (dict "volumes" list "mounts" list) -}}
{{- end -}}
