{{/* Names, labels and the image. */}}

{{- define "mlcompute.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mlcompute.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "mlcompute.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "mlcompute.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "mlcompute.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "mlcompute.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mlcompute
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: (dict "ctx" . "component" "operator"). */}}
{{- define "mlcompute.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlcompute.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "mlcompute.componentLabels" -}}
{{ include "mlcompute.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "mlcompute.operatorServiceAccount" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (printf "%s-operator" (include "mlcompute.fullname" .)) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mlcompute.routerServiceAccount" -}}
{{- if .Values.router.serviceAccount.create }}
{{- default (printf "%s-router" (include "mlcompute.fullname" .)) .Values.router.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.router.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mlcompute.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Pod and container security for the PodSecurity "restricted" profile. */}}
{{- define "mlcompute.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "mlcompute.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
The operator's permissions, one rule per API group, derived from what the controllers access
(grep `Api<` in src/). Shared by the ClusterRole (all namespaces) and the per-namespace Roles.
Never a wildcard: tests/chart.rs fails on `*`.
*/}}
{{- define "mlcompute.operatorNamespacedRules" -}}
# Our kinds: watched; status written by server-side apply; owner references with
# blockOwnerDeletion need update on finalizers where OwnerReferencesPermissionEnforcement is on.
- apiGroups: ["mlcompute.io"]
  resources: [trainingjobs, onlineendpoints, onlinedeployments, batchendpoints, batchdeployments, batchjobs, environments]
  verbs: [get, list, watch]
- apiGroups: ["mlcompute.io"]
  resources: [trainingjobs/status, onlineendpoints/status, onlinedeployments/status, batchendpoints/status, batchdeployments/status, batchjobs/status, environments/status]
  verbs: [get, patch, update]
- apiGroups: ["mlcompute.io"]
  resources: [trainingjobs/finalizers, onlineendpoints/finalizers, onlinedeployments/finalizers, batchendpoints/finalizers, batchdeployments/finalizers, batchjobs/finalizers]
  verbs: [update]
# Batch invocations create BatchJobs (REST invoke API).
- apiGroups: ["mlcompute.io"]
  resources: [batchjobs]
  verbs: [create]
# Children. Pods: TrainingJob instances (created and deleted directly; batch Pods come from Jobs).
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, delete]
# Rendezvous and deployment Services; MPI hostfiles, routing tables and BatchJob progress objects
# (ConfigMaps); OnlineDeployment Deployments; BatchJob Jobs; HTTPRoutes. Server-side apply
# needs create and patch. The batch drivers' Roles grant get and patch on their job's progress
# ConfigMap: RBAC lets no one grant more than it holds, so the operator holds those verbs here.
- apiGroups: [""]
  resources: [services, configmaps]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: ["apps"]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
# The autoscaler (target_utilization) sizes the OnlineDeployments' Deployments through their scale
# subresource.
- apiGroups: ["apps"]
  resources: [deployments/scale]
  verbs: [get, patch, update]
# No HorizontalPodAutoscaler is created any more (Azure ML: never on these deployments); one an
# older release left on a deployment is deleted.
- apiGroups: ["autoscaling"]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, delete]
- apiGroups: ["batch"]
  resources: [jobs]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: [httproutes]
  verbs: [get, list, watch, create, patch, delete]
# Secrets: MPI SSH keys and endpoint keys, created once (owner references delete them).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch]
# Each BatchJob's driver Pods get a ServiceAccount with a Role allowing get/patch on one ConfigMap
# (resourceNames: the job's progress object); the operator holds those verbs itself, so it needs no
# escalate or bind.
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, create, patch]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: [roles]
  # list/watch: the driver Roles are cached, so one an older operator made is narrowed.
  verbs: [get, list, watch, create, patch]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: [rolebindings]
  verbs: [get, create, patch]
# Events (kube-runtime's Recorder creates, then patches a series).
- apiGroups: ["events.k8s.io"]
  resources: [events]
  verbs: [create, patch]
# The Job controller's FailedCreate Events: a BatchJob whose driver Pods admission refuses says why.
- apiGroups: [""]
  resources: [events]
  verbs: [list, watch]
{{- end }}
