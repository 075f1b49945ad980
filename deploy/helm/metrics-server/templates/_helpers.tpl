{{/* Chart name, overridable. */}}
{{- define "metrics-server.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Object names. A release already named after the chart is not repeated
("metrics-server", not "metrics-server-metrics-server").
*/}}
{{- define "metrics-server.fullname" -}}
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

{{- define "metrics-server.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "metrics-server.labels" -}}
helm.sh/chart: {{ include "metrics-server.chart" . }}
{{ include "metrics-server.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels the Deployment, Service, PDB and anti-affinity select on. */}}
{{- define "metrics-server.selectorLabels" -}}
app.kubernetes.io/name: {{ include "metrics-server.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "metrics-server.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "metrics-server.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference; the tag defaults to the chart's appVersion. */}}
{{- define "metrics-server.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{/* Whether the chart mounts a serving certificate (every tls.type but the self-signed one). */}}
{{- define "metrics-server.mountsCertificate" -}}
{{- if has .Values.tls.type (list "helm" "existingSecret" "cert-manager") }}true{{ end }}
{{- end }}

{{/* Name of the Secret holding the serving certificate. */}}
{{- define "metrics-server.tlsSecretName" -}}
{{- if eq .Values.tls.type "existingSecret" }}
{{- required "tls.existingSecret.name is required with tls.type=existingSecret" .Values.tls.existingSecret.name }}
{{- else }}
{{- printf "%s-tls" (include "metrics-server.fullname" .) }}
{{- end }}
{{- end }}

{{/* DNS names the kube-apiserver may use for the Service, comma-separated (splitList "," to use). */}}
{{- define "metrics-server.dnsNames" -}}
{{- $svc := include "metrics-server.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- printf "%s,%s.%s,%s.%s.svc,%s.%s.svc.%s" $svc $svc $ns $svc $ns $svc $ns .Values.tls.clusterDomain }}
{{- end }}

{{/* A PodDisruptionBudget is made when asked for, or by default for more than one replica. */}}
{{- define "metrics-server.pdbEnabled" -}}
{{- $enabled := .Values.podDisruptionBudget.enabled }}
{{- if kindIs "invalid" $enabled }}
{{- if gt (int .Values.replicas) 1 }}true{{ end }}
{{- else if $enabled }}true{{ end }}
{{- end }}

{{/* Checks of value combinations that would install something broken. */}}
{{- define "metrics-server.validate" -}}
{{- if not (has .Values.tls.type (list "metrics-server" "helm" "existingSecret" "cert-manager")) }}
{{- fail (printf "tls.type must be one of metrics-server, helm, existingSecret, cert-manager (got %q)" .Values.tls.type) }}
{{- end }}
{{- if and .Values.hostNetwork.enabled (eq (int .Values.containerPort) 10250) }}
{{- fail "hostNetwork.enabled needs a containerPort other than 10250 (the kubelet listens there), e.g. 4443" }}
{{- end }}
{{- if not (has .Values.antiAffinity (list "required" "preferred" "none")) }}
{{- fail (printf "antiAffinity must be required, preferred or none (got %q)" .Values.antiAffinity) }}
{{- end }}
{{- end }}
