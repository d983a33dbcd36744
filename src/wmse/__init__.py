"""wmse: self-supervised representation learning with Whitening-MSE (W-MSE).

Ermolov, Siarohin, Sangineto, Sebe, "Whitening for Self-Supervised Representation
Learning", ICML 2021 (arXiv 2007.06346).
"""

from wmse.loss import wmse_loss
from wmse.whitening import WhiteningError, whiten

__version__ = "0.1.0"

__all__ = ["WhiteningError", "__version__", "whiten", "wmse_loss"]
