"""The Diameter credit-control application: read the CCR, rate, one balance call, the CCA;
queries and refunds; the session notifier (RAR/ASR)."""
