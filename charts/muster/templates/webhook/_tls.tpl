{{/*
The chart-generated webhook certificates (certManager.enabled false), as JSON: crt, key, ca,
notAfter and caBundle. The CA and serving certificate are generated once and kept across upgrades
(read back with lookup), and renewed by the first upgrade within renewBeforeDays of expiry. During
a renewal the webhooks trust the old and the new CA, so pods still serving the old certificate
until the kubelet refreshes their Secret volume keep working; the operator reloads the files.
`helm template` cannot look up, so each render generates fresh certificates.

The Secret (generated-certificate.yaml) and the webhooks' caBundle (webhooks.yaml) must come from
one generation: the first caller stores it in the render's top-level context, which helm shares
between the templates of a chart, and every later caller reads it back.
*/}}
{{- define "muster.generatedTLS" -}}
{{- $root := . -}}
{{- if not (hasKey $root "musterGeneratedTLS") -}}
{{- $fullname := include "muster.fullname" $root -}}
{{- $service := include "muster.webhookServiceName" $root -}}
{{- $secretName := include "muster.tlsSecretName" $root -}}
{{- $now := now | unixEpoch | int64 -}}
{{- $validity := int $root.Values.webhook.tls.validityDays -}}
{{- $renewBefore := mul (int $root.Values.webhook.tls.renewBeforeDays) 86400 -}}
{{- $existing := lookup "v1" "Secret" $root.Release.Namespace $secretName -}}
{{- $crt := "" -}}{{- $key := "" -}}{{- $ca := "" -}}{{- $notAfter := 0 -}}{{- $previousCA := "" -}}
{{- if and $existing $existing.data $existing.metadata.annotations -}}
{{- $stamp := index $existing.metadata.annotations "muster.dev/not-after" | default "0" | int64 -}}
{{- $oldCA := index $existing.data "ca.crt" | default "" | b64dec -}}
{{- if and (gt (sub $stamp $renewBefore) $now) (index $existing.data "tls.crt") (index $existing.data "tls.key") $oldCA -}}
{{- $crt = index $existing.data "tls.crt" | b64dec -}}
{{- $key = index $existing.data "tls.key" | b64dec -}}
{{- $ca = $oldCA -}}
{{- $notAfter = $stamp -}}
{{- else -}}
{{- $previousCA = $oldCA -}}
{{- end -}}
{{- end -}}
{{- if not $crt -}}
{{- $dnsNames := list $service (printf "%s.%s" $service $root.Release.Namespace) (printf "%s.%s.svc" $service $root.Release.Namespace) -}}
{{- $caPair := genCA (printf "%s-webhook-ca" $fullname) $validity -}}
{{- $serving := genSignedCert (printf "%s.%s.svc" $service $root.Release.Namespace) nil $dnsNames $validity $caPair -}}
{{- $crt = $serving.Cert -}}
{{- $key = $serving.Key -}}
{{- $ca = $caPair.Cert -}}
{{- $notAfter = add $now (mul $validity 86400) -}}
{{- end -}}
{{- $tls := dict "crt" $crt "key" $key "ca" $ca "notAfter" (toString $notAfter) "caBundle" (printf "%s%s" $ca $previousCA | b64enc) -}}
{{- $_ := set $root "musterGeneratedTLS" $tls -}}
{{- end -}}
{{- toJson (get $root "musterGeneratedTLS") -}}
{{- end -}}
