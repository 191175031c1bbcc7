"""MERSiamC3D on Ray: micro-expression recognition with a two-stage siamese C3D.

Zhao et al., "A two-stage 3D CNN based learning method for spontaneous micro-expression
recognition", Neurocomputing 448 (2021) 276-289. Importing this package has no Ray side
effects; the Ray stages live in `mer.keyframes.preprocess`, `mer.train` and `mer.evaluation.search`.
"""

__version__ = "0.1.0"
