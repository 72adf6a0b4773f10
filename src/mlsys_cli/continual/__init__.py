"""Continual learning (DMLS ch. 9-10): the model registry, retrain triggers, champion/challenger."""
