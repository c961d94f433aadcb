"""Entry points over the adapters: the admission webhook server and the kopf operator."""
