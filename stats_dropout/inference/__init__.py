"""Inference: one Monte-Carlo engine (``montecarlo``), statistical decisions and their design twins
(``stats``), and the result types they return (``results``).
"""
