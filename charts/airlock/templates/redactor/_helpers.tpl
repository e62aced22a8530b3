{{/* The redactor's files: the vault key ring (a Secret) and the policy directory (a ConfigMap). */}}
{{- define "airlock.redactor.files" -}}
{{- $svc := .Values.redactor -}}
{{- $files := list -}}
{{- with include "airlock.lib.secretFileMount" (dict "volume" "vault-keys" "block" $svc.vaultKeys "env" "AIRLOCK_REDACTOR_VAULT_KEYS_FILE") -}}
{{- $files = append $files (fromYaml .) -}}
{{- end -}}
{{- with include "airlock.lib.configDirMount" (dict "ctx" . "component" "redactor" "what" "policies" "block" $svc.policies "env" "AIRLOCK_REDACTOR_POLICY_DIR") -}}
{{- $files = append $files (fromYaml .) -}}
{{- end -}}
{{- toYaml (dict "files" $files) -}}
{{- end -}}

{{- define "airlock.redactor.env" -}}
{{- toYaml (dict "env" list) -}}
{{- end -}}

{{- define "airlock.redactor.volumes" -}}
{{- toYaml (dict "volumes" list "mounts" list) -}}
{{- end -}}
