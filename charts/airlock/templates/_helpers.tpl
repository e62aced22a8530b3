{{/*
Names, labels and the table of components. Helpers that concern one component take a dict:
  ctx       = the root context (.)
  component = ingest | redactor | llm-worker | auditor (or provisioning, audit-replay for tools)
*/}}

{{- define "airlock.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "airlock.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "airlock.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of a component's resources: <fullname>-<component>. */}}
{{- define "airlock.resourceName" -}}
{{- printf "%s-%s" (include "airlock.fullname" .ctx) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "airlock.labels" -}}
helm.sh/chart: {{ include "airlock.chart" .ctx }}
{{ include "airlock.selectorLabels" . }}
app.kubernetes.io/part-of: airlock
{{- if .ctx.Chart.AppVersion }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "airlock.selectorLabels" -}}
app.kubernetes.io/name: {{ include "airlock.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/*
The services: values block, entry point, env prefix and input topics (base names). The input
topics and consumer group must match what each service's app.py subscribes to
(airlock.devstack.mesh.service_inputs); tests/chart checks that they do.
*/}}
{{- define "airlock.components" -}}
ingest:
  values: ingest
  module: airlock.ingest.app:app
  envPrefix: AIRLOCK_INGEST
  inputs: [requests]
redactor:
  values: redactor
  module: airlock.redactor.app:app
  envPrefix: AIRLOCK_REDACTOR
  inputs: [accepted, completions]
llm-worker:
  values: llmWorker
  module: airlock.llm_worker.app:app
  envPrefix: AIRLOCK_LLM_WORKER
  inputs: [redacted]
auditor:
  values: auditor
  module: airlock.auditor.app:app
  envPrefix: AIRLOCK_AUDITOR
  inputs: [audit]
{{- end -}}

{{/* One component's row of the table above, as a dict. */}}
{{- define "airlock.component" -}}
{{- $all := fromYaml (include "airlock.components" .ctx) -}}
{{- toYaml (index $all .component) -}}
{{- end -}}

{{/* One component's values block. Usage: $svc := include "airlock.values" . | fromYaml */}}
{{- define "airlock.values" -}}
{{- $meta := fromYaml (include "airlock.component" .) -}}
{{- toYaml (index .ctx.Values $meta.values) -}}
{{- end -}}

{{/* Kafka principal of a component (airlock.core.access): airlock-<service>, airlock-audit-reader, airlock-provisioning. */}}
{{- define "airlock.kafkaPrincipal" -}}
{{- if eq . "audit-replay" -}}airlock-audit-reader{{- else -}}{{- printf "airlock-%s" . -}}{{- end -}}
{{- end -}}

{{/* Consumer group of a component: airlock-<service>, as StageRuntime names it. */}}
{{- define "airlock.consumerGroup" -}}
{{- printf "airlock-%s" .component -}}
{{- end -}}

{{/* Image reference. Params: ctx, image (the block with registry/repository/tag/digest). */}}
{{- define "airlock.image" -}}
{{- $registry := coalesce .image.registry .ctx.Values.global.image.registry -}}
{{- $repository := .image.repository -}}
{{- $ref := ternary $repository (printf "%s/%s" $registry $repository) (empty $registry) -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $ref .image.digest -}}
{{- else -}}
{{- $tag := coalesce .image.tag .ctx.Values.global.image.tag .ctx.Chart.AppVersion | toString -}}
{{- printf "%s:%s" $ref $tag -}}
{{- end -}}
{{- end -}}

{{/* Service account name of a component. Params: ctx, component, svc (values block). */}}
{{- define "airlock.serviceAccountName" -}}
{{- if .svc.serviceAccount.create -}}
{{- default (include "airlock.resourceName" .) .svc.serviceAccount.name -}}
{{- else -}}
{{- default "default" .svc.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Ports named in global.kafka.bootstrapServers plus networkPolicy.kafka.extraPorts, deduplicated. */}}
{{- define "airlock.kafkaPorts" -}}
{{- $ports := list -}}
{{- range splitList "," .Values.global.kafka.bootstrapServers -}}
{{- $hostPort := trim . -}}
{{- if contains ":" $hostPort -}}
{{- $ports = append $ports (atoi (last (splitList ":" $hostPort))) -}}
{{- end -}}
{{- end -}}
{{- range .Values.networkPolicy.kafka.extraPorts -}}
{{- $ports = append $ports (int .) -}}
{{- end -}}
{{- toJson (uniq $ports) -}}
{{- end -}}

{{/* Port of the OTLP endpoint URL (explicit, or the scheme's default). */}}
{{- define "airlock.otlpPort" -}}
{{- $url := urlParse .Values.global.otlp.endpoint -}}
{{- $host := $url.host -}}
{{- if contains ":" $host -}}
{{- last (splitList ":" $host) -}}
{{- else if eq $url.scheme "https" -}}
443
{{- else -}}
80
{{- end -}}
{{- end -}}

{{/*
Checks that span several values (the schema checks each value alone). Fails the render with a
message naming the values to change.
*/}}
{{- define "airlock.validate" -}}
{{- $kafka := .Values.global.kafka -}}
{{- $services := 0 -}}
{{- range $component, $meta := fromYaml (include "airlock.components" .) -}}
{{- if (index $.Values $meta.values).enabled -}}{{- $services = add1 $services -}}{{- end -}}
{{- end -}}
{{- if and (eq .Values.global.profile "production") (gt $services 0) -}}
{{- $np := .Values.networkPolicy -}}
{{- $why := "(or set global.profile: development for a throw-away cluster)" -}}
{{- if not $np.enabled -}}
{{- fail (printf "networkPolicy.enabled is false: the production profile confines every pod to its own traffic %s" $why) -}}
{{- end -}}
{{- if not $np.kafka.to -}}
{{- fail (printf "networkPolicy.kafka.to is empty: name the brokers (ipBlock CIDRs or selectors), or every pod may reach any address on the Kafka ports %s" $why) -}}
{{- end -}}
{{- if not $np.metrics.from -}}
{{- fail (printf "networkPolicy.metrics.from is empty: name who scrapes metrics (the monitoring namespace), or any pod may read them %s" $why) -}}
{{- end -}}
{{- if and .Values.llmWorker.enabled (not .Values.llmWorker.modelEndpoints.to) -}}
{{- fail (printf "llmWorker.modelEndpoints.to is empty: name the model endpoints (the provider's CIDRs or an egress proxy), or the llm-worker may send prompts to any address on port 443 %s" $why) -}}
{{- end -}}
{{- if and .Values.auditor.enabled (not .Values.auditor.witness.existingClaim) -}}
{{- fail (printf "auditor.witness.existingClaim is empty: without a witness outside Kafka a truncated ledger tail cannot be proven %s" $why) -}}
{{- end -}}
{{- end -}}
{{- if and (eq $kafka.securityProtocol "PLAINTEXT") (not $kafka.allowInsecure) -}}
{{- fail "global.kafka.securityProtocol PLAINTEXT lets any client on the network act as any stage: use SASL_SSL (or SSL), or set global.kafka.allowInsecure: true for a throw-away cluster" -}}
{{- end -}}
{{- if hasPrefix "SASL" $kafka.securityProtocol -}}
{{- $running := list -}}
{{- range $component, $meta := fromYaml (include "airlock.components" .) -}}
{{- if (index $.Values $meta.values).enabled -}}{{- $running = append $running $component -}}{{- end -}}
{{- end -}}
{{- if and .Values.provisioning.enabled (not .Values.strimzi.enabled) -}}{{- $running = append $running "provisioning" -}}{{- end -}}
{{- if .Values.auditReplay.enabled -}}{{- $running = append $running "audit-replay" -}}{{- end -}}
{{- range $running -}}
{{- if not (index $kafka.sasl.credentials .) -}}
{{- fail (printf "global.kafka.sasl.credentials.%s is required with securityProtocol %s: each stage and job logs in as its own principal (%s); create its Secret (password key %q) and name it here" . $kafka.securityProtocol (include "airlock.kafkaPrincipal" .) $kafka.sasl.passwordKey) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $component, $meta := fromYaml (include "airlock.components" .) -}}
{{- $svc := index $.Values $meta.values -}}
{{- if and $svc.enabled (not $svc.meshKeys.existingSecret) -}}
{{- fail (printf "%s.meshKeys.existingSecret is required: the stage signs every record it writes with this key ring (`airlock ops mesh-keys --out DIR`, then `kubectl create secret generic <name> --from-file=signing-keys.json=DIR/%s.json`)" $meta.values $component) -}}
{{- end -}}
{{- if and $svc.enabled (not $.Values.global.mesh.trust.existingConfigMap) -}}
{{- fail "global.mesh.trust.existingConfigMap is required: every stage checks what it reads against the stages' public keys (`kubectl create configmap <name> --from-file=trust.json=DIR/trust.json` after `airlock ops mesh-keys --out DIR`)" -}}
{{- end -}}
{{- end -}}
{{- if and $kafka.tls.caSecret (not (has $kafka.securityProtocol (list "SSL" "SASL_SSL"))) -}}
{{- fail (printf "global.kafka.tls.caSecret is set but securityProtocol is %s: use SSL or SASL_SSL, or unset the CA" $kafka.securityProtocol) -}}
{{- end -}}
{{- if and .Values.redactor.enabled (not .Values.redactor.vaultKeys.existingSecret) -}}
{{- fail "redactor.vaultKeys.existingSecret is required: the redactor seals placeholder maps with this key ring (create it with `kubectl create secret generic <name> --from-file=keys.json=<key ring file>`)" -}}
{{- end -}}
{{- if and .Values.ingest.enabled (not .Values.ingest.clients.existingSecret) -}}
{{- fail "ingest.clients.existingSecret is required: ingest authenticates every request against this clients file (create it with `kubectl create secret generic <name> --from-file=clients.yaml=<clients file>`)" -}}
{{- end -}}
{{- if and .Values.auditor.enabled (not .Values.auditor.signingKeys.existingSecret) -}}
{{- fail "auditor.signingKeys.existingSecret is required: the auditor signs ledger checkpoints with this key ring (create it with `kubectl create secret generic <name> --from-file=signing-keys.json=<key ring file>`)" -}}
{{- end -}}
{{- $partitions := int .Values.topics.partitions -}}
{{- range $component, $meta := fromYaml (include "airlock.components" .) -}}
{{- $svc := index $.Values $meta.values -}}
{{- if $svc.enabled -}}
{{- if gt (int $svc.replicas) $partitions -}}
{{- fail (printf "%s.replicas (%d) exceeds topics.partitions (%d): replicas beyond the input topic's partitions sit idle; lower replicas or raise topics.partitions" $meta.values (int $svc.replicas) $partitions) -}}
{{- end -}}
{{- if $svc.autoscaling.enabled -}}
{{- if gt (int $svc.autoscaling.maxReplicas) $partitions -}}
{{- fail (printf "%s.autoscaling.maxReplicas (%d) exceeds topics.partitions (%d): replicas beyond the input topic's partitions sit idle; lower maxReplicas or raise topics.partitions" $meta.values (int $svc.autoscaling.maxReplicas) $partitions) -}}
{{- end -}}
{{- if gt (int $svc.autoscaling.minReplicas) (int $svc.autoscaling.maxReplicas) -}}
{{- fail (printf "%s.autoscaling.minReplicas (%d) exceeds maxReplicas (%d)" $meta.values (int $svc.autoscaling.minReplicas) (int $svc.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- end -}}
{{- if le (float64 $svc.terminationGracePeriodSeconds) (float64 $svc.shutdownGraceSeconds) -}}
{{- fail (printf "%s.terminationGracePeriodSeconds (%v) must exceed %s.shutdownGraceSeconds (%v), or the kubelet kills the pod before in-flight work commits" $meta.values $svc.terminationGracePeriodSeconds $meta.values $svc.shutdownGraceSeconds) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
