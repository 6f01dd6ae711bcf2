"""Studies: the nonlinear experiments (``experiments``, ``training_experiments``) and the forum
thread's claims, measured (``claims/``).
"""
