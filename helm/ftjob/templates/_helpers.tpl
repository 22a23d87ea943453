{{/* Names ------------------------------------------------------------------------------------------ */}}

{{- define "ftjob.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ftjob.fullname" -}}
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

{{- define "ftjob.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels: the selector labels never change between releases (a Deployment's selector is immutable). */}}
{{- define "ftjob.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ftjob.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "ftjob.labels" -}}
helm.sh/chart: {{ include "ftjob.chart" . }}
app.kubernetes.io/name: {{ include "ftjob.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ftjob
{{- end -}}

{{- define "ftjob.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ftjob.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Images: repository@digest when a digest is set, else repository:tag (tag defaults to appVersion). */}}
{{- define "ftjob.imageRef" -}}
{{- $image := index . 0 -}}
{{- $appVersion := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default $appVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "ftjob.operatorImage" -}}
{{- include "ftjob.imageRef" (list .Values.image .Chart.AppVersion) -}}
{{- end -}}

{{- define "ftjob.trainerImage" -}}
{{- include "ftjob.imageRef" (list .Values.trainer.image .Chart.AppVersion) -}}
{{- end -}}

{{/* Mode and namespaces --------------------------------------------------------------------------- */}}

{{- define "ftjob.clusterMode" -}}
{{- if empty .Values.watch.namespaces -}}true{{- end -}}
{{- end -}}

{{/* Namespaces that get the trainer ServiceAccount (and the trainer NetworkPolicy), one per line
(deduplicated, in order): the watched ones, trainerServiceAccount.namespaces, then perNamespace's keys. */}}
{{- define "ftjob.trainerServiceAccountNamespaces" -}}
{{- $namespaces := list -}}
{{- if .Values.trainerServiceAccount.create -}}
{{- $perNamespace := keys (.Values.trainerServiceAccount.perNamespace | default dict) | sortAlpha -}}
{{- $namespaces = concat .Values.watch.namespaces .Values.trainerServiceAccount.namespaces $perNamespace | uniq -}}
{{- end -}}
{{- join "\n" $namespaces -}}
{{- end -}}

{{/* The trainer ServiceAccount name to pass to the operator as the default of trainer pods, or "". */}}
{{- define "ftjob.defaultTrainerServiceAccount" -}}
{{- $tsa := .Values.trainerServiceAccount -}}
{{- if eq $tsa.useAsDefault "always" -}}
{{- $tsa.name -}}
{{- else if and (eq $tsa.useAsDefault "auto") $tsa.create (not (include "ftjob.clusterMode" .)) -}}
{{- $tsa.name -}}
{{- end -}}
{{- end -}}

{{/* RBAC -------------------------------------------------------------------------------------------
Exactly what the operator does, no more (tests/helm/test_rbac.py has a real API server check it: as the
operator's ServiceAccount each call succeeds, anything else is refused, and SelfSubjectRulesReview lists
exactly these rules; the operator process runs with that account without a denial):
- finetunejobs: get (a fresh read before an irreversible decision); list, watch (kopf's watch, which feeds the
  operator's cache). No patch: kopf runs only watch-event handlers and writes nothing on the objects.
- finetunejobs/status: patch (the operator's only write: a merge patch of status).
- finetunejobs/finalizers: update: the trainer Job's ownerReference sets blockOwnerDeletion, which the
  OwnerReferencesPermissionEnforcement admission plugin allows only to who may update the owner's
  finalizers. The operator never adds a finalizer.
- finetunejobpolicies: get (the namespace's GPU-hour budget; absent CRD or object: no budget);
  finetunejobpolicies/status: patch (the GPU-hour ledger). Never the spec: the guardrails' parameters are
  the platform's, and the operator's identity must not be able to loosen them.
- jobs: get, create, patch (suspend), delete (a failed job's pod would hold its GPU); list (once at start-up,
  and kopf's watch), watch (kopf).
- pods: list (at start-up, a fresh read, kopf's watch), watch (kopf); pods/log: get (progress records).
- events: create (core/v1 Events; kopf's own event posting is turned off).
No Secrets, no ConfigMaps: credentials reach trainer pods as secretKeyRef, resolved by the kubelet. */}}
{{- define "ftjob.rbacRules" -}}
- apiGroups: ["ftjob.dev"]
  resources: ["finetunejobs"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["ftjob.dev"]
  resources: ["finetunejobs/status"]
  verbs: ["patch"]
- apiGroups: ["ftjob.dev"]
  resources: ["finetunejobs/finalizers"]
  verbs: ["update"]
- apiGroups: ["ftjob.dev"]
  resources: ["finetunejobpolicies"]
  verbs: ["get"]
- apiGroups: ["ftjob.dev"]
  resources: ["finetunejobpolicies/status"]
  verbs: ["patch"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{/* Guardrails -------------------------------------------------------------------------------------- */}}

{{/* The operator's identity as the API server sees it: what the Job guardrail matches. */}}
{{- define "ftjob.operatorUsername" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "ftjob.serviceAccountName" .) -}}
{{- end -}}

{{/* The name of the FineTuneJobPolicy each guarded namespace holds (the bindings' paramRef). */}}
{{- define "ftjob.policyName" -}}default{{- end -}}
