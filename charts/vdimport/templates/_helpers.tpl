{{/* Names, labels and the derived values every template shares. */}}

{{- define "vdimport.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, or just the release name when it already contains the chart name. */}}
{{- define "vdimport.fullname" -}}
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

{{- define "vdimport.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vdimport.labels" -}}
helm.sh/chart: {{ include "vdimport.chart" . }}
app.kubernetes.io/name: {{ include "vdimport.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vdimport
{{- end }}

{{/*
The labels the DAG puts on every step pod whatever the step and run
(dags/vdimport_dag/templating.py step_labels); the NetworkPolicy selects on them.
*/}}
{{- define "vdimport.stepPodSelectorLabels" -}}
app.kubernetes.io/name: vdimport-step-runner
app.kubernetes.io/part-of: vdimport
{{- end }}

{{/* The step runner image: repository@digest, else repository:tag (tag defaults to appVersion). */}}
{{- define "vdimport.image" -}}
{{- $image := .Values.stepRunner.image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/* A value as a ConfigMap string: objects and lists as JSON, the rest as text. */}}
{{- define "vdimport.envValue" -}}
{{- if or (kindIs "map" .) (kindIs "slice" .) }}
{{- toJson . }}
{{- else if kindIs "float64" . }}
{{- /* YAML numbers arrive as float64; print 8 as "8", not "8e+00" */ -}}
{{- if eq . (floor .) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/* The step pods' env (the step runner's VDIMPORT_* settings), as a JSON object. */}}
{{- define "vdimport.stepEnv" -}}
{{- $v := .Values }}
{{- $env := dict "VDIMPORT_AUTH" $v.oci.auth }}
{{- with $v.oci.region }}
{{- $_ := set $env "VDIMPORT_REGION" . }}
{{- end }}
{{- if eq $v.oci.auth "workload_identity" }}
{{- /* read by the OCI SDK's OKE workload identity signer */ -}}
{{- $_ := set $env "OCI_RESOURCE_PRINCIPAL_VERSION" "2.2" }}
{{- with $v.oci.region }}
{{- $_ := set $env "OCI_RESOURCE_PRINCIPAL_REGION" . }}
{{- end }}
{{- end }}
{{- with $v.oci.compartmentId }}
{{- $_ := set $env "VDIMPORT_COMPARTMENT_ID" . }}
{{- end }}
{{- with $v.oci.subnetId }}
{{- $_ := set $env "VDIMPORT_SUBNET_ID" . }}
{{- end }}
{{- with $v.workerVm.imageId }}
{{- $_ := set $env "VDIMPORT_WORKER_IMAGE_ID" . }}
{{- end }}
{{- $_ := set $env "VDIMPORT_WORKER_SHAPE" $v.workerVm.shape }}
{{- $_ := set $env "VDIMPORT_WORKER_OCPUS" (include "vdimport.envValue" $v.workerVm.ocpus) }}
{{- $_ := set $env "VDIMPORT_WORKER_MEMORY_GB" (include "vdimport.envValue" $v.workerVm.memoryGb) }}
{{- $_ := set $env "VDIMPORT_WRITE_VPUS_PER_GB" (include "vdimport.envValue" $v.workerVm.writeVpusPerGb) }}
{{- $_ := set $env "VDIMPORT_DOWNLOAD_STREAMS" (include "vdimport.envValue" $v.workerVm.downloadStreams) }}
{{- $_ := set $env "VDIMPORT_MAX_VOLUME_GB" (include "vdimport.envValue" $v.maxVolumeGb) }}
{{- with $v.notifications.topicId }}
{{- $_ := set $env "VDIMPORT_NOTIFICATION_TOPIC_ID" . }}
{{- end }}
{{- with $v.airflow.uiUrl }}
{{- $_ := set $env "VDIMPORT_AIRFLOW_UI_URL" . }}
{{- end }}
{{- $_ := set $env "VDIMPORT_REAPER_GRACE_SECONDS" (include "vdimport.envValue" $v.reaper.graceSeconds) }}
{{- with $v.reaper.extraCompartments }}
{{- $_ := set $env "VDIMPORT_REAPER_COMPARTMENTS" (join "," .) }}
{{- end }}
{{- with $v.oci.bucketName }}
{{- $_ := set $env "VDIMPORT_REAPER_BUCKETS" . }}
{{- end }}
{{- with $v.oci.workBucketName }}
{{- $_ := set $env "VDIMPORT_WORK_BUCKET" . }}
{{- end }}
{{- range $name, $seconds := $v.deadlineSeconds }}
{{- $_ := set $env (printf "VDIMPORT_%s_TIMEOUT_SECONDS" (upper $name)) (include "vdimport.envValue" $seconds) }}
{{- end }}
{{- range $name, $value := $v.extraEnv }}
{{- if hasKey $env $name }}
{{- fail (printf "extraEnv.%s: the chart sets %s from its own value (see values.yaml); set that instead" $name $name) }}
{{- end }}
{{- $_ := set $env $name (include "vdimport.envValue" $value) }}
{{- end }}
{{- toJson $env }}
{{- end }}

{{/* The DAG's settings (dags/vdimport_dag/settings.py, VDIMPORT_<FIELD>), as a JSON object. */}}
{{- define "vdimport.dagSettings" -}}
{{- $v := .Values }}
{{- $env := dict "VDIMPORT_STEP_RUNNER" "kubernetes" }}
{{- $_ := set $env "VDIMPORT_POD_NAMESPACE" .Release.Namespace }}
{{- $_ := set $env "VDIMPORT_POD_IMAGE" (include "vdimport.image" .) }}
{{- $_ := set $env "VDIMPORT_POD_IMAGE_PULL_POLICY" $v.stepRunner.image.pullPolicy }}
{{- with $v.stepRunner.image.pullSecrets }}
{{- $_ := set $env "VDIMPORT_POD_IMAGE_PULL_SECRETS" (join "," .) }}
{{- end }}
{{- with $v.stepRunner.resources }}
{{- $_ := set $env "VDIMPORT_POD_RESOURCES" (toJson .) }}
{{- end }}
{{- $_ := set $env "VDIMPORT_POD_SERVICE_ACCOUNT" $v.stepRunner.serviceAccount.name }}
{{- $_ := set $env "VDIMPORT_POD_CONFIGMAP" $v.stepRunner.configMap.name }}
{{- $_ := set $env "VDIMPORT_STEP_POOL" $v.dag.stepPool.name }}
{{- $_ := set $env "VDIMPORT_STEP_POOL_SLOTS" (include "vdimport.envValue" $v.dag.stepPool.slots) }}
{{- $_ := set $env "VDIMPORT_MAX_WORKER_VMS" (include "vdimport.envValue" $v.dag.maxWorkerVms) }}
{{- $_ := set $env "VDIMPORT_REAPER_SCHEDULE" $v.reaper.schedule }}
{{- $_ := set $env "VDIMPORT_FAILED_POD_RETENTION_HOURS" (include "vdimport.envValue" $v.reaper.failedPodRetentionHours) }}
{{- range $name, $value := $v.dag.extraSettings }}
{{- $_ := set $env $name (include "vdimport.envValue" $value) }}
{{- end }}
{{- with $v.airflow.xcomSidecarImage }}
{{- /* The connection the DAG's KubernetesPodOperator reads (VDIMPORT_POD_KUBERNETES_CONN_ID's
default; vdimport.validate refuses another id), as Airflow reads an AIRFLOW_CONN_<ID> variable:
in-cluster credentials, which the provider's hook falls back to without a connection, and the
pinned XCom sidecar image. */ -}}
{{- $extra := dict "in_cluster" true "xcom_sidecar_container_image" . }}
{{- $_ := set $env "AIRFLOW_CONN_KUBERNETES_DEFAULT" (toJson (dict "conn_type" "kubernetes" "extra" $extra)) }}
{{- end }}
{{- toJson $env }}
{{- end }}

{{/* The connection id the DAG's KubernetesPodOperator uses (dags/vdimport_dag/settings.py). */}}
{{- define "vdimport.kubernetesConnId" -}}
{{- default "kubernetes_default" (get .Values.dag.extraSettings "VDIMPORT_POD_KUBERNETES_CONN_ID") | toString }}
{{- end }}

{{/* What imports need but the values leave empty (NOTES.txt lists it). */}}
{{- define "vdimport.missing" -}}
{{- $missing := list }}
{{- if not .Values.oci.compartmentId }}{{ $missing = append $missing "oci.compartmentId" }}{{ end }}
{{- if not .Values.oci.subnetId }}{{ $missing = append $missing "oci.subnetId" }}{{ end }}
{{- if and (eq .Values.oci.auth "workload_identity") (not .Values.oci.region) }}{{ $missing = append $missing "oci.region" }}{{ end }}
{{- join ", " $missing }}
{{- end }}

{{/* Combinations the schema cannot express; each fails the render with the values to change. */}}
{{- define "vdimport.validate" -}}
{{- $v := .Values }}
{{- if and $v.oci.workBucketName (eq $v.oci.workBucketName $v.oci.bucketName) }}
{{- fail (printf "oci.workBucketName and oci.bucketName are both %q: command output written to the upload bucket would start imports; give it a bucket of its own" $v.oci.bucketName) }}
{{- end }}
{{- if lt (int64 $v.dag.stepPool.slots) (int64 $v.dag.maxWorkerVms) }}
{{- fail (printf "dag.stepPool.slots (%v) is below dag.maxWorkerVms (%v): runs holding a worker VM would wait for a pool slot" $v.dag.stepPool.slots $v.dag.maxWorkerVms) }}
{{- end }}
{{- $connId := include "vdimport.kubernetesConnId" . }}
{{- if and $v.airflow.xcomSidecarImage (ne $connId "kubernetes_default") }}
{{- fail (printf "dag.extraSettings.VDIMPORT_POD_KUBERNETES_CONN_ID is %q, but the chart pins the XCom sidecar (airflow.xcomSidecarImage) in the connection kubernetes_default only (a variable for %q would hide the connection you made): put xcom_sidecar_container_image into the extra of %q and set airflow.xcomSidecarImage to \"\"" $connId $connId $connId) }}
{{- end }}
{{- if and $v.dag.settingsConfigMap.create (eq $v.dag.settingsConfigMap.name $v.stepRunner.configMap.name) (eq $v.airflow.namespace .Release.Namespace) }}
{{- fail (printf "dag.settingsConfigMap.name and stepRunner.configMap.name are both %q in namespace %s: give them different names" $v.stepRunner.configMap.name .Release.Namespace) }}
{{- end }}
{{- end }}
