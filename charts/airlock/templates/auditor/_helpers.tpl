{{/* The auditor's file: the checkpoint signing key ring (a Secret). */}}
{{- define "airlock.auditor.files" -}}
{{- $files := list -}}
{{- with include "airlock.lib.secretFileMount" (dict "volume" "signing-keys" "block" .Values.auditor.signingKeys "env" "AIRLOCK_AUDITOR_SIGNING_KEYS_FILE") -}}
{{- $files = append $files (fromYaml .) -}}
{{- end -}}
{{- toYaml (dict "files" $files) -}}
{{- end -}}

{{/*
The witness directory (checkpoints kept outside Kafka, so a truncated ledger tail is provable)
needs storage others can read later: a PersistentVolumeClaim. Without one the auditor runs
without a witness, and NOTES.txt says so.
*/}}
{{- define "airlock.auditor.env" -}}
{{- $env := list -}}
{{- if .Values.auditor.witness.existingClaim -}}
{{- $env = append $env (dict "name" "AIRLOCK_AUDITOR_WITNESS_DIR" "value" "/var/lib/airlock/witness") -}}
{{- end -}}
{{- toYaml (dict "env" $env) -}}
{{- end -}}

{{- define "airlock.auditor.volumes" -}}
{{- $volumes := list -}}
{{- $mounts := list -}}
{{- with .Values.auditor.witness.existingClaim -}}
{{- $volumes = append $volumes (dict "name" "witness" "persistentVolumeClaim" (dict "claimName" .)) -}}
{{- $mounts = append $mounts (dict "name" "witness" "mountPath" "/var/lib/airlock/witness") -}}
{{- end -}}
{{- toYaml (dict "volumes" $volumes "mounts" $mounts) -}}
{{- end -}}

{{/*
The witness for the audit-replay Job: the auditor's claim mounted read-only, and the variable
`airlock audit replay` reads it from (checkpoints and the public keys published there).
*/}}
{{- define "airlock.auditReplay.witness" -}}
{{- $witness := dict "env" list "volumes" list "mounts" list -}}
{{- with .Values.auditor.witness.existingClaim -}}
{{- $env := list (dict "name" "AIRLOCK_AUDITOR_WITNESS_DIR" "value" "/var/lib/airlock/witness") -}}
{{- $volumes := list (dict "name" "witness" "persistentVolumeClaim" (dict "claimName" . "readOnly" true)) -}}
{{- $mounts := list (dict "name" "witness" "mountPath" "/var/lib/airlock/witness" "readOnly" true) -}}
{{- $witness = dict "env" $env "volumes" $volumes "mounts" $mounts -}}
{{- end -}}
{{- toYaml $witness -}}
{{- end -}}
