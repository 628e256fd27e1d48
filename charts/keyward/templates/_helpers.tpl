{{/* The chart's name. */}}
{{- define "keyward.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's prefix for every name that is not public: "keyward" for a
release named keyward (names then equal config/default's), else
<release>-keyward.
*/}}
{{- define "keyward.fullname" -}}
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

{{- define "keyward.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "keyward.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: keyward
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The manager's image: [registry/]repository[:tag][@digest], the tag defaulting
to the chart's appVersion.
*/}}
{{- define "keyward.image" -}}
{{- $ref := .Values.image.repository -}}
{{- with .Values.image.registry }}{{ $ref = printf "%s/%s" . $ref }}{{ end -}}
{{- $ref = printf "%s:%s" $ref (.Values.image.tag | default .Chart.AppVersion) -}}
{{- with .Values.image.digest }}{{ $ref = printf "%s@%s" $ref . }}{{ end -}}
{{- $ref -}}
{{- end }}

{{/* The release's objects. */}}
{{- define "keyward.instanceLabels" -}}
app.kubernetes.io/name: {{ include "keyward.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The manager's Pods: the Deployment's selector (immutable; config/default's
is the same for a release named keyward), the Services', the PDB's.
*/}}
{{- define "keyward.selectorLabels" -}}
{{ include "keyward.instanceLabels" . }}
app.kubernetes.io/component: manager
{{- end }}

{{- define "keyward.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-controller-manager" (include "keyward.fullname" .)) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The verifier's TLS mode (--verify-tls), checked: self-signed, cert-dir (with
verifier.tls.secretName) or off.
*/}}
{{- define "keyward.verifierTLS" -}}
{{- $mode := .Values.verifier.tls.mode | default "self-signed" -}}
{{- if not (has $mode (list "self-signed" "cert-dir" "off")) -}}
{{- fail (printf "verifier.tls.mode must be self-signed, cert-dir or off, not %q" $mode) -}}
{{- end -}}
{{- if and (eq $mode "cert-dir") (not .Values.verifier.tls.secretName) -}}
{{- fail "verifier.tls.mode cert-dir needs verifier.tls.secretName (a Secret with tls.crt and tls.key)" -}}
{{- end -}}
{{- $mode -}}
{{- end }}
