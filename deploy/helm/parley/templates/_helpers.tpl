{{/*
Names. The release "parley" gets exactly the kustomize manifests' names
(parley, parley-config, parley-secrets, parley-postgres, parley-redis, …).
*/}}
{{- define "parley.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "parley.fullname" -}}
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

{{- define "parley.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels of one component (server, postgres, redis): name + instance
+ component. Selectors are immutable; nothing else goes into them.
Call with (dict "ctx" $ "component" "server").
*/}}
{{- define "parley.selectorLabels" -}}
app.kubernetes.io/name: {{ include "parley.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
Labels of every object. part-of=parley is what the logging addon's Vector
selects pods by. The version label is Parley's, so only the server's objects
carry it.
*/}}
{{- define "parley.labels" -}}
{{ include "parley.selectorLabels" . }}
app.kubernetes.io/part-of: parley
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "parley.chart" .ctx }}
{{- if eq .component "server" }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
{{- end }}
{{- end -}}

{{- define "parley.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (toString $tag) -}}
{{- end -}}
{{- end -}}

{{- define "parley.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "parley.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The chart's own Secret (generated or from values). */}}
{{- define "parley.chartSecretName" -}}
{{- printf "%s-secrets" (include "parley.fullname" .) -}}
{{- end -}}

{{/* Where jwt-secret, database-password and redis-password live. */}}
{{- define "parley.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "parley.chartSecretName" .) -}}
{{- end -}}

{{/* Does the chart create a Secret at all? */}}
{{- define "parley.ownSecret" -}}
{{- if or (not .Values.secrets.existingSecret) (and (not .Values.postgresql.enabled) .Values.externalDatabase.url) (and (not .Values.redis.enabled) .Values.externalRedis.url) -}}
true
{{- end -}}
{{- end -}}

{{/* The port of PARLEY_LISTEN: the container port, probes, Services. */}}
{{- define "parley.port" -}}
{{- $listen := toString .Values.config.PARLEY_LISTEN -}}
{{- $port := regexFind "[0-9]+$" $listen -}}
{{- if or (not (contains ":" $listen)) (not $port) -}}
{{- fail (printf "config.PARLEY_LISTEN %q is not HOST:PORT" $listen) -}}
{{- end -}}
{{- $port -}}
{{- end -}}

{{/* A ConfigMap value: numbers without an exponent or a trailing ".0". */}}
{{- define "parley.str" -}}
{{- if and (kindIs "float64" .) (eq (float64 .) (floor .)) -}}
{{- int64 . -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end -}}

{{/* A duration as `parley serve` reads it (250ms, 5s, 2m, 1h, 1d, 1.5s) -> seconds. */}}
{{- define "parley.seconds" -}}
{{- $v := toString . | trim -}}
{{- $num := regexFind `^[0-9]+(\.[0-9]+)?` $v -}}
{{- $unit := trimPrefix $num $v | trim -}}
{{- $mult := dict "ms" 0.001 "s" 1.0 "" 1.0 "m" 60.0 "h" 3600.0 "d" 86400.0 -}}
{{- if or (not $num) (not (hasKey $mult $unit)) -}}
{{- fail (printf "%q is not a duration (250ms, 5s, 2m, 1h)" $v) -}}
{{- end -}}
{{- mulf (float64 $num) (get $mult $unit) -}}
{{- end -}}

{{/*
Refuse values that would deploy something broken: the same rules
deploy/test.sh checks on the kustomize manifests.
*/}}
{{- define "parley.validate" -}}
{{- $c := .Values.config -}}
{{- $timeout := include "parley.seconds" ($c.PARLEY_DRAIN_TIMEOUT | default "20s") | float64 -}}
{{- $grace := include "parley.seconds" ($c.PARLEY_DRAIN_GRACE | default "3s") | float64 -}}
{{- $spread := include "parley.seconds" ($c.PARLEY_DRAIN_SPREAD | default "5s") | float64 -}}
{{- $need := addf .Values.preStopSleepSeconds $timeout 5 -}}
{{- if lt (float64 .Values.terminationGracePeriodSeconds) $need -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be at least preStopSleepSeconds (%v) + PARLEY_DRAIN_TIMEOUT (%vs) + 5 s = %v: the kubelet would kill nodes mid-drain" .Values.terminationGracePeriodSeconds .Values.preStopSleepSeconds $timeout $need) -}}
{{- end -}}
{{- if gt (addf $grace $spread) $timeout -}}
{{- fail (printf "PARLEY_DRAIN_GRACE + PARLEY_DRAIN_SPREAD (%vs) must not exceed PARLEY_DRAIN_TIMEOUT (%vs)" (addf $grace $spread) $timeout) -}}
{{- end -}}
{{- if and .Values.externalDatabase.url .Values.externalDatabase.existingSecret -}}
{{- fail "set either externalDatabase.url or externalDatabase.existingSecret, not both" -}}
{{- end -}}
{{- if and .Values.externalRedis.url .Values.externalRedis.existingSecret -}}
{{- fail "set either externalRedis.url or externalRedis.existingSecret, not both" -}}
{{- end -}}
{{- $extDb := or .Values.externalDatabase.url .Values.externalDatabase.existingSecret -}}
{{- if and .Values.postgresql.enabled $extDb -}}
{{- fail "externalDatabase is set while postgresql.enabled is true: set postgresql.enabled=false to use an external PostgreSQL" -}}
{{- end -}}
{{- if and (not .Values.postgresql.enabled) (not $extDb) -}}
{{- fail "postgresql.enabled is false: set externalDatabase.url or externalDatabase.existingSecret (a fleet needs PostgreSQL)" -}}
{{- end -}}
{{- $extRedis := or .Values.externalRedis.url .Values.externalRedis.existingSecret -}}
{{- if and .Values.redis.enabled $extRedis -}}
{{- fail "externalRedis is set while redis.enabled is true: set redis.enabled=false to use an external Redis" -}}
{{- end -}}
{{- if and (not .Values.redis.enabled) (not $extRedis) -}}
{{- fail "redis.enabled is false: set externalRedis.url or externalRedis.existingSecret (a fleet needs Redis for fan-out)" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (float64 .Values.autoscaling.minReplicas) (float64 .Values.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas is larger than autoscaling.maxReplicas" -}}
{{- end -}}
{{- if .Values.postgresql.enabled -}}
{{- $nodes := ternary .Values.autoscaling.maxReplicas .Values.replicaCount .Values.autoscaling.enabled | float64 -}}
{{- $pool := $c.PARLEY_DATABASE_POOL | default 16 | float64 -}}
{{- if gt (addf (mulf $nodes $pool) 10) (float64 .Values.postgresql.maxConnections) -}}
{{- fail (printf "%v nodes x PARLEY_DATABASE_POOL %v + 10 reserved exceeds postgresql.maxConnections %v" $nodes $pool .Values.postgresql.maxConnections) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.autoscaling.targetConnectionsPerPod (not .Values.autoscaling.enabled) -}}
{{- fail "autoscaling.targetConnectionsPerPod needs autoscaling.enabled" -}}
{{- end -}}
{{- end -}}
