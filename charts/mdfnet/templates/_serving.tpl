{{/* The serving pod, shared by the Deployment (serving.yaml) and the KServe InferenceService's predictor
     (inferenceservice.yaml): one container running `mlflow models serve` from mdfnet-serve, the same probes,
     resources, GPU scheduling, threads and security settings either way. */}}

{{/* torch threads per server worker (MDFNET_SERVING_THREADS): serving.threads, else resources.limits.cpu (4,
     "4", "3500m", 0.5) / workers rounded down, at least 1; empty without either (the code then reads the pod's
     cgroup CPU quota: mdfnet/serving/runtime.py). */}}
{{- define "mdfnet.serving.threads" -}}
{{- $s := .Values.serving -}}
{{- if $s.threads -}}
{{- $s.threads -}}
{{- else -}}
{{- $cpu := toString ((($s.resources).limits).cpu | default "") -}}
{{- $milli := 0 -}}
{{- if hasSuffix "m" $cpu -}}
{{- $milli = trimSuffix "m" $cpu | atoi -}}
{{- else if $cpu -}}
{{- $milli = mulf (float64 $cpu) 1000 | int -}}
{{- end -}}
{{- if $milli -}}
{{- max 1 (div $milli (mul 1000 (int $s.workers))) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Pod spec fields (a Deployment's template.spec, or inline in an InferenceService predictor); call with
     (dict "ctx" $ "container" "serving"). */}}
{{- define "mdfnet.serving.podSpec" -}}
{{- $ := .ctx -}}
{{- $s := $.Values.serving -}}
{{- $tracking := include "mdfnet.serving.trackingUri" $ -}}
{{- $threads := include "mdfnet.serving.threads" $ -}}
serviceAccountName: {{ include "mdfnet.workload.serviceAccountName" $ }}
automountServiceAccountToken: false
{{- with $.Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
securityContext:
  {{- toYaml $.Values.podSecurityContext | nindent 2 }}
containers:
  - name: {{ .container }}
    image: {{ include "mdfnet.image" (dict "ctx" $ "image" $s.image "name" "serve") }}
    imagePullPolicy: {{ $.Values.image.pullPolicy }}
    # The model in use is whatever version the alias points at when the pod starts (the pipeline's register step
    # moves `champion`): restarting the pods picks up a new one (NOTES prints the command).
    command: [mlflow, models, serve]
    args:
      - --model-uri={{ include "mdfnet.serving.modelUri" $ }}
      - --env-manager=local
      - --host=0.0.0.0
      - --port={{ $s.port }}
      - --workers={{ $s.workers }}
      - --timeout={{ $s.timeout }}
    # The credentials Secret as env (MLflow auth, S3 if the model's artefacts are not proxied); an explicit
    # tracking URI below wins over the Secret's MLFLOW_TRACKING_URI.
    envFrom:
      - secretRef:
          name: {{ include "mdfnet.credentials.secretName" $ }}
          optional: true
    env:
      {{- with $tracking }}
      - name: MLFLOW_TRACKING_URI
        value: {{ . | quote }}
      {{- end }}
      # mdfnet.serving's device: the GPU the pod requests, else the CPU (a missing GPU fails loudly)
      - name: MDFNET_SERVING_DEVICE
        value: {{ ternary "cuda" "cpu" (and $s.gpu true) | quote }}
      {{- with $threads }}
      # torch threads per worker from the CPU limit (serving.threads); OpenMP/BLAS elsewhere in the pod alike
      - name: MDFNET_SERVING_THREADS
        value: {{ . | quote }}
      - name: OMP_NUM_THREADS
        value: {{ . | quote }}
      {{- end }}
      # requests waiting for the model are scored together, up to this many studies per pass
      - name: MDFNET_SERVING_MAX_BATCH
        value: {{ $s.maxBatch | quote }}
      - name: HOME
        value: /home/mdfnet
      - name: TMPDIR
        value: /tmp
    ports:
      - name: http
        containerPort: {{ $s.port }}
        protocol: TCP
    # /ping answers 200 once the model is loaded; loading starts with downloading it from MLflow.
    startupProbe:
      httpGet:
        path: /ping
        port: http
      periodSeconds: 10
      failureThreshold: {{ div (int $s.startupSeconds) 10 | max 1 }}
    readinessProbe:
      httpGet:
        path: /ping
        port: http
      periodSeconds: 10
      timeoutSeconds: 5
    livenessProbe:
      httpGet:
        path: /health
        port: http
      periodSeconds: 30
      timeoutSeconds: 10
      failureThreshold: 3
    resources:
      {{- $res := deepCopy $s.resources }}
      {{- if $s.gpu }}
      {{- $_ := set $res "limits" (merge (dict $.Values.gpu.resourceName 1) ($res.limits | default dict)) }}
      {{- end }}
      {{- toYaml $res | nindent 6 }}
    securityContext:
      {{- toYaml $.Values.securityContext | nindent 6 }}
    volumeMounts:
      - name: tmp
        mountPath: /tmp
      - name: home
        mountPath: /home/mdfnet
volumes:
  # the downloaded model and scratch files (the root filesystem is read-only)
  - name: tmp
    emptyDir:
      sizeLimit: {{ $s.tmpSizeLimit }}
  - name: home
    emptyDir:
      sizeLimit: 1Gi
{{- $nodeSelector := $s.nodeSelector }}
{{- $tolerations := $s.tolerations }}
{{- if $s.gpu }}
{{- $nodeSelector = merge (deepCopy $s.nodeSelector) $.Values.gpu.nodeSelector }}
{{- if $.Values.gpu.toleration.key }}
{{- $tolerations = append $s.tolerations $.Values.gpu.toleration }}
{{- end }}
{{- end }}
{{- with $nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $s.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
