{{/* Names: "<release>-lamina" (or the release name when it already says lamina), at most 40
characters so that every "-suffix" below stays within Kubernetes' 63. Subcharts call these too. */}}
{{- define "lamina.fullname" -}}
{{- if contains "lamina" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-lamina" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lamina.secretName" -}}
{{- .Values.global.existingSecret | default (include "lamina.fullname" .) -}}
{{- end -}}

{{- define "lamina.labels" -}}
app.kubernetes.io/name: lamina
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* selector labels; call with (dict "ctx" $ "component" "server") */}}
{{- define "lamina.selectorLabels" -}}
app.kubernetes.io/name: lamina
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lamina.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "lamina.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "lamina.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{- define "lamina.artifactUrl" -}}
{{- if .Values.artifacts.url -}}
{{- .Values.artifacts.url -}}
{{- else if .Values.s3.enabled -}}
{{- printf "s3://%s/lamina" .Values.s3.bucket -}}
{{- else -}}
{{- fail "set artifacts.url (s3://bucket/prefix), or s3.enabled=true for the bundled store" -}}
{{- end -}}
{{- end -}}

{{- define "lamina.s3Endpoint" -}}
{{- if .Values.artifacts.endpoint -}}
{{- .Values.artifacts.endpoint -}}
{{- else if and .Values.s3.enabled (not .Values.artifacts.url) -}}
{{- printf "http://%s-s3:9000" (include "lamina.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Environment every Lamina container shares: the workspace, the admin key, S3 credentials. */}}
{{- define "lamina.env" -}}
- name: LAMINA_HOME
  value: /workspace
- name: HOME
  value: /tmp
- name: LAMINA_SERVER__ADMIN_KEY
  valueFrom: {secretKeyRef: {name: {{ include "lamina.secretName" . }}, key: admin-key}}
- name: LAMINA_CATALOG_URL
  valueFrom: {secretKeyRef: {name: {{ include "lamina.secretName" . }}, key: catalog-url}}
- name: AWS_ACCESS_KEY_ID
  valueFrom: {secretKeyRef: {name: {{ include "lamina.secretName" . }}, key: s3-access-key, optional: true}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ include "lamina.secretName" . }}, key: s3-secret-key, optional: true}}
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The init container: `lamina init --profile cluster` in the pod's workspace folder. On a new
database the first pod creates the catalog (a PostgreSQL advisory lock serialises pods that start
together); it fails, and Kubernetes retries it, until PostgreSQL and S3 answer. */}}
{{- define "lamina.initContainer" -}}
- name: init-workspace
  image: {{ include "lamina.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - init
    - /workspace
    - --profile=cluster
    - --catalog-url=$(LAMINA_CATALOG_URL)
    - --artifact-url={{ include "lamina.artifactUrl" . }}
    {{- with include "lamina.s3Endpoint" . }}
    - --artifact-option=endpoint_url={{ . }}
    {{- end }}
    {{- with .Values.vectors.url }}
    - --vector-url={{ . }}
    {{- end }}
  env:
    {{- include "lamina.env" . | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - {name: workspace, mountPath: /workspace}
    - {name: tmp, mountPath: /tmp}
{{- end -}}
