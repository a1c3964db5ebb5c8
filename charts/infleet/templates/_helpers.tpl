{{/* Names: release "infleet" renders infleet-operator, infleet-operator-metrics, ... the
     same names as manifests/base (a test compares them). */}}
{{- define "infleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "infleet.fullname" -}}
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

{{- define "infleet.operator.fullname" -}}
{{- printf "%s-operator" (include "infleet.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "infleet.redis.fullname" -}}
{{- printf "%s-redis" (include "infleet.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "infleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "infleet.operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "infleet.peeringName" -}}
{{- default (include "infleet.operator.fullname" .) .Values.operator.peering.name -}}
{{- end -}}

{{- define "infleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "infleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: infleet
{{- end -}}

{{- define "infleet.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "infleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "infleet.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "infleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{- define "infleet.operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The ClusterRole rules, taken from files/rbac.yaml: a byte-identical copy of
     manifests/base/rbac.yaml (tests/test_delivery_chart.py keeps them in sync). */}}
{{- define "infleet.rbacRules" -}}
{{- $rules := list -}}
{{- range $doc := regexSplit "(?m)^---\\s*$" (.Files.Get "files/rbac.yaml") -1 -}}
{{- $obj := fromYaml $doc -}}
{{- if and $obj (eq (get $obj "kind" | default "") "ClusterRole") -}}
{{- $rules = get $obj "rules" -}}
{{- end -}}
{{- end -}}
{{- if not $rules -}}
{{- fail "files/rbac.yaml has no ClusterRole with rules: copy manifests/base/rbac.yaml into charts/infleet/files/" -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end -}}
