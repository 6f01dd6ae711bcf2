"""Reference: what dropout *is*.

Reference schemes and their fast exact masks (``schemes``), closed forms (``theory``), what each
contract promises (``contracts``), the probes every check runs on (``probes``), and the small
numpy networks of the experiments with their training (``networks``, ``training``), and the
structured schemes — DropBlock, stochastic depth — with their exact theory (``structured``,
``structured_theory``; registry ``structured.STRUCTURED_SCHEMES``, apart from ``SCHEMES``).
"""
