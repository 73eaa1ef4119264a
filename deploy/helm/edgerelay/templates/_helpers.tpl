{{/* Names and labels. */}}
{{- define "edgerelay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "edgerelay.fullname" -}}
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

{{- define "edgerelay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edgerelay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "edgerelay.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "edgerelay.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "edgerelay.secretName" -}}
{{- .Values.secret.name | default (include "edgerelay.fullname" .) -}}
{{- end -}}

{{/*
Drain timing, in whole seconds (values.schema.json: integers, >= 0).
preStop sleeps lbDelay only when the relay does not wait itself
(drain.relayKeys false).
*/}}
{{- define "edgerelay.preStopSeconds" -}}
{{- if .Values.drain.relayKeys -}}0{{- else -}}{{ int .Values.drain.lbDelay }}{{- end -}}
{{- end -}}

{{- define "edgerelay.gracePeriodSeconds" -}}
{{- $d := .Values.drain -}}
{{- if lt (int $d.shutdownTimeout) (add $d.lbDelay $d.period) -}}
{{- fail (printf "drain.shutdownTimeout %v is less than drain.lbDelay + drain.period (%v + %v)" $d.shutdownTimeout $d.lbDelay $d.period) -}}
{{- end -}}
{{- add (include "edgerelay.preStopSeconds" . | int) $d.shutdownTimeout $d.margin -}}
{{- end -}}

{{/*
Resources: .Values.resources verbatim, or computed from .Values.capacity
(values.yaml explains the figures).
*/}}
{{- define "edgerelay.resources" -}}
{{- if .Values.resources -}}
{{- toYaml .Values.resources -}}
{{- else -}}
{{- $c := .Values.capacity -}}
{{- $mem := add 64 (int $c.cacheMiB) (div (add (mul (int $c.connections) 8) 1023) 1024) -}}
{{- $cpu := add 250 (div (mul (int64 $c.deliveriesPerSecond) 1000) 80000) -}}
requests:
  cpu: {{ printf "%dm" $cpu }}
  memory: {{ printf "%dMi" $mem }}
limits:
  memory: {{ printf "%dMi" (mul $mem 2) }}
{{- end -}}
{{- end -}}

{{/*
relay.yaml: .Values.config with the keys the chart owns set from the values.
*/}}
{{- define "edgerelay.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) -}}
{{- range $k := list "listen" "node" "shutdown_timeout" "tls" -}}
{{- if hasKey $cfg $k }}{{ fail (printf "config.%s is set by the chart; remove it from config" $k) }}{{ end -}}
{{- end -}}
{{- $cluster := get $cfg "cluster" | default dict -}}
{{- range $k := list "bind" "advertise" "seeds" "drain" "name" -}}
{{- if hasKey $cluster $k }}{{ fail (printf "config.cluster.%s is set by the chart; remove it from config" $k) }}{{ end -}}
{{- end -}}
{{- $ws := get $cfg "websocket" | default dict -}}
{{- if hasKey $ws "max_connections" }}{{ fail "config.websocket.max_connections is set by the chart from capacity.connections" }}{{ end -}}
{{- $ch := get $cfg "channels" | default dict -}}
{{- if hasKey $ch "max_cached_bytes" }}{{ fail "config.channels.max_cached_bytes is set by the chart from capacity.cacheMiB" }}{{ end -}}
{{- range $e := .Values.secret.env -}}
{{- $path := splitList "." $e.key -}}
{{- $m := $cfg -}}
{{- range $i, $p := $path -}}
{{- if and (kindIs "map" $m) (hasKey $m $p) -}}
{{- if eq (add1 $i) (len $path) }}{{ fail (printf "config.%s comes from the Secret (secret.env); remove it from config" $e.key) }}{{ end -}}
{{- $m = get $m $p -}}
{{- else -}}
{{- $m = dict -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $_ := set $cfg "listen" (printf ":%d" (int .Values.ports.http)) -}}
{{- $_ := set $cfg "shutdown_timeout" (printf "%ds" (int .Values.drain.shutdownTimeout)) -}}
{{- $_ := set $cluster "bind" (printf "0.0.0.0:%d" (int .Values.ports.gossip)) -}}
{{- $_ := set $cluster "seeds" (list (printf "%s-gossip.%s.svc.%s:%d" (include "edgerelay.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.ports.gossip))) -}}
{{- if .Values.drain.relayKeys -}}
{{- $_ := set $cluster "drain" (dict "lb_delay" (printf "%ds" (int .Values.drain.lbDelay)) "period" (printf "%ds" (int .Values.drain.period))) -}}
{{- end -}}
{{- if .Values.tls.secretName -}}
{{- $_ := set $cfg "tls" (dict "cert_file" "/etc/edgerelay-tls/tls.crt" "key_file" "/etc/edgerelay-tls/tls.key") -}}
{{- end -}}
{{- $_ := set $cfg "cluster" $cluster -}}
{{- $_ := set $ws "max_connections" (int .Values.capacity.connections) -}}
{{- $_ := set $cfg "websocket" $ws -}}
{{- $_ := set $ch "max_cached_bytes" (printf "%dMiB" (int .Values.capacity.cacheMiB)) -}}
{{- $_ := set $cfg "channels" $ch -}}
{{- toYaml $cfg -}}
{{- end -}}
