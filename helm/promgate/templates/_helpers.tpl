{{/*
Names, labels and the image reference shared by every template.
*/}}

{{- define "promgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: release-chart, unless the release name already contains the chart name.
Kubernetes names are at most 63 characters (DNS label).
*/}}
{{- define "promgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "promgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "promgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "promgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "promgate.labels" -}}
helm.sh/chart: {{ include "promgate.chart" . }}
{{ include "promgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: promotion-gate
{{- end }}

{{- define "promgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "promgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
repository@sha256:... when a digest is given (preferred), else repository:tag.
*/}}
{{- define "promgate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The address a listener binds: listenHost, or the pod IP that the POD_IP variable carries.
*/}}
{{- define "promgate.listenHost" -}}
{{- default "$(POD_IP)" .Values.listenHost }}
{{- end }}

{{- define "promgate.proxyPortName" -}}
{{- default (printf "px-%s" .stage | trunc 15 | trimSuffix "-") .portName }}
{{- end }}

{{/*
PROMGATE_PROXY_LISTEN: stage=host:port[,stage=host:port].
*/}}
{{- define "promgate.proxyListen" -}}
{{- $host := include "promgate.listenHost" . }}
{{- $items := list }}
{{- range .Values.proxy.listeners }}
{{- $items = append $items (printf "%s=%s:%d" .stage $host (int .port)) }}
{{- end }}
{{- join "," $items }}
{{- end }}

{{- define "promgate.ledgerClaim" -}}
{{- default (printf "%s-ledger" (include "promgate.fullname" .)) .Values.ledger.persistence.existingClaim }}
{{- end }}

{{/*
"true" when the ledger lives in the API server (promotions and ConfigMaps), else "".
*/}}
{{- define "promgate.kubeLedger" -}}
{{- if eq .Values.ledger.backend "kubernetes" }}true{{ end }}
{{- end }}

{{/*
"true" when replicas elect a leader: asked for, and possible (the kubernetes ledger).
*/}}
{{- define "promgate.leaderElection" -}}
{{- if and .Values.leaderElection.enabled (include "promgate.kubeLedger" .) }}true{{ end }}
{{- end }}

{{/*
"true" when promgate talks to the Kubernetes API at all (and so needs a token and RBAC).
*/}}
{{- define "promgate.usesKubeApi" -}}
{{- if or (include "promgate.kubeLedger" .) (include "promgate.leaderElection" .) (eq .Values.actuator "kubernetes") }}true{{ end }}
{{- end }}

{{- define "promgate.leaseName" -}}
{{- default (include "promgate.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
The namespaces of the stages' workloads, as a JSON list: kubernetes.targetNamespaces, or
the release namespace.
*/}}
{{- define "promgate.targetNamespaces" -}}
{{- default (list .Release.Namespace) .Values.kubernetes.targetNamespaces | uniq | toJson }}
{{- end }}

{{/*
The Deployments promgate may update when names are given: each stable Deployment, its
canary candidate and its blue-green slots (sidecar/domain/kubernetes.py names them).
*/}}
{{- define "promgate.deploymentNames" -}}
{{- $names := list }}
{{- range .Values.kubernetes.resourceNames.deployments }}
{{- $names = concat $names (list . (printf "%s-candidate" .) (printf "%s-blue" .) (printf "%s-green" .)) }}
{{- end }}
{{- $names | toJson }}
{{- end }}

{{- define "promgate.runbookUrl" -}}
{{- printf "%s/runbook.md" (trimSuffix "/" .Values.docs.url) }}
{{- end }}

{{/*
The ConfigMap holding policy.yaml: one the user made from a policy file, or the chart's.
*/}}
{{- define "promgate.policyConfigMap" -}}
{{- default (printf "%s-policy" (include "promgate.fullname" .)) .Values.existingPolicyConfigMap }}
{{- end }}
