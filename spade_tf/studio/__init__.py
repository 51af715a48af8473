"""The studio: paint a label map in the browser and watch a model draw it (``spade-tf studio``).

``spade_tf.studio.server`` holds the HTTP server and its two backends (a model loaded here, or
a TensorFlow Serving deployment); ``static/`` holds the page (HTML, CSS and JavaScript, no build
step, no CDN). The page speaks TensorFlow Serving's REST body for the export's ``png`` signature
to the studio, so the same page works in front of a real Serving instance (``--serving-url``).
"""

from spade_tf.studio.server import (LocalBackend, ServingBackend, StudioError, StudioServer,
                                    model_info, start_studio)

__all__ = ["LocalBackend", "ServingBackend", "StudioError", "StudioServer", "model_info",
           "start_studio"]
