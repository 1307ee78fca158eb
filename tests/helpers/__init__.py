"""What the tests share: one tiny DenseNet and one trained digits DenseNet (``models``), images and data files
(``images``, ``evaldata``), INT8 fault injection (``int8``), the shared fixtures' folder (``shared``), stand-ins for
TensorRT, HTTP hosts and third-party ports, and the hostile-input harness. Test modules import from here, never from
one another."""
