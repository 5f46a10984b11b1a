"""Instance groups: the reconciler (``reconciler``) and the phases it runs over one
group's scope (``scope``): ``health``, ``scaling``, ``gc`` and ``status``."""
