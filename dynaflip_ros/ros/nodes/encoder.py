"""Node `encoder`: camera image -> embedding f(o_t) of the deployed DynaFLIP image encoder.

Runs `inference.factory.load_encoder_backend(model_dir, backend)` (ONNX Runtime / TensorRT /
torch behind one `EncoderBackend`); with backend "onnxruntime" (or "auto" without TensorRT) the
process never imports torch. Each image is embedded alone (batch 1) as soon as it arrives; the
image subscription keeps only the newest frame, so a slow encoder skips frames instead of
falling behind.

Subscribed:  /camera/color/image_raw   sensor_msgs/Image rgb8                          IMAGE_QOS
Published:   /dynaflip/embedding       sensor_msgs/Image "32FC1", height 1, width D,
                                       header copied from the source image (stamp!)    IMAGE_QOS
             /dynaflip/encoder_info    std_msgs/String JSON: manifest (weights_sha256,
                                       version, embedding_dim, input_hw, ...), backend  LATCHED_QOS
             /dynaflip/latency         stages "image_transport", "encode"               EVENT_QOS
Parameters: configs.ros.EncoderNodeConfig (section `encoder:`).
"""
from __future__ import annotations

import dataclasses
import sys

from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String

from dynaflip_ros.configs.ros import EncoderNodeConfig
from dynaflip_ros.inference.base import EncoderBackend
from dynaflip_ros.resources import resolve_path
from dynaflip_ros.ros.conversions import embedding_to_image, image_to_rgb, stamp_to_s
from dynaflip_ros.ros.params import load_node_config, node_kwargs
from dynaflip_ros.ros.qos import EMBEDDING_TOPIC, ENCODER_INFO_TOPIC, IMAGE_QOS, IMAGE_TOPIC, LATCHED_QOS
from dynaflip_ros.ros.runtime import (
    run_node,
    LatencyReporter, Stopwatch, ros_now_s, safe_publish, to_json_msg,
)


def encoder_info(backend: EncoderBackend, model_dir: str) -> dict:
    """The provenance record published on /dynaflip/encoder_info (JSON object).

    Keys: weights_sha256, manifest_version, embedding_dim, input_hw, architecture, backend
    (its `name`, e.g. "onnxruntime"), model_dir, manifest (the full EncoderManifest as a dict).
    """
    m = backend.manifest
    return {
        "weights_sha256": m.weights_sha256,
        "manifest_version": m.version,
        "embedding_dim": m.embedding_dim,
        "input_hw": list(m.input_hw),
        "architecture": m.architecture,
        "backend": getattr(backend, "name", type(backend).__name__),
        "model_dir": str(model_dir),
        "manifest": dataclasses.asdict(m),
    }


def load_encoder(config: EncoderNodeConfig) -> tuple[EncoderBackend, str]:
    """(backend, resolved model dir) of an `EncoderNodeConfig` (`inference.factory`). Raises
    FileNotFoundError (model dir) or the factory's errors."""
    from dynaflip_ros.inference.factory import load_encoder_backend

    model_dir = resolve_path(config.model_dir)
    n = config.num_threads
    backend = load_encoder_backend(str(model_dir), backend=config.backend,
                                   onnxruntime_options={"intra_op_num_threads": n}, torch_options={"num_threads": n})
    return backend, str(model_dir)


def embed_image(backend: EncoderBackend, msg: Image):
    """(embedding (D,) float32, seconds the forward pass took) of an rgb8 Image message.
    Raises ValueError on a malformed image, RuntimeError from the backend."""
    rgb = image_to_rgb(msg)  # (H, W, 3) uint8
    with Stopwatch() as sw:
        emb = backend.embed(rgb[None])  # (1, D) float32
    return emb[0], sw.elapsed_s


class InProcessEncoder:
    """The encoder's work inside a node: publishes /dynaflip/encoder_info from `node`, subscribes
    `node` to the camera images, embeds each image it is allowed to (`wanted(stamp_s)`; None:
    every image) and hands (embedding (D,) float32, the image's std_msgs/Header) to `on_embedding`
    in the same callback; then reports the "image_transport" and "encode" latency (deferred, so
    that publishing the reports delays neither the embedding nor what is planned from it).

    Serves EncoderNode (on_embedding publishes the embedding) and the policy node's CPU-frugal
    layout (on_embedding plans a chunk in the same process).
    """

    def __init__(self, node: Node, backend: EncoderBackend, model_dir: str, on_embedding,
                 latency: LatencyReporter, wanted=None) -> None:
        self.node, self.backend, self.on_embedding, self.wanted = node, backend, on_embedding, wanted
        self._latency = latency
        self.info = encoder_info(backend, str(model_dir))
        self.errors = 0
        self._info_pub = node.create_publisher(String, ENCODER_INFO_TOPIC, LATCHED_QOS)
        safe_publish(node, self._info_pub, to_json_msg(self.info), "encoder_info")
        node.create_subscription(Image, IMAGE_TOPIC, self._on_image, IMAGE_QOS)

    def _on_image(self, msg: Image) -> None:
        stamp_s = stamp_to_s(msg.header.stamp)
        with self._latency.deferred():
            self._latency.report("image_transport", ros_now_s(self.node) - stamp_s, stamp_s)
            if self.wanted is not None and not self.wanted(stamp_s):  # nothing would act on it: no encoding
                return
            try:
                embedding, encode_s = embed_image(self.backend, msg)
            except (ValueError, RuntimeError) as e:
                self.errors += 1
                self.node.get_logger().error(f"embedding failed ({self.errors} so far): {e}",
                                             throttle_duration_sec=2.0)
                return
            self._latency.report("encode", encode_s, stamp_s)
            self.on_embedding(embedding, msg.header)


class EncoderNode(Node):
    """Embeds every received image with `backend` and republishes it with the image's header.

    Args:
        backend: an EncoderBackend to use; None -> load `model_dir` with the `backend` parameter.
    Raises ConfigError (parameters), FileNotFoundError (model dir), or the factory's errors
    (unavailable backend, malformed manifest).
    """

    def __init__(self, backend: EncoderBackend | None = None, node_name: str = "encoder") -> None:
        super().__init__(node_name, **node_kwargs())
        self.config = load_node_config(self, EncoderNodeConfig)
        if backend is None:
            backend, model_dir = load_encoder(self.config)
        else:
            model_dir = resolve_path(self.config.model_dir)
        self.embeddings_published = 0
        self._emb_pub = self.create_publisher(Image, EMBEDDING_TOPIC, IMAGE_QOS)
        self.core = InProcessEncoder(self, backend, model_dir, self._publish, LatencyReporter(self))
        self.backend, self.info = backend, self.core.info
        self.get_logger().info(
            f"encoder: {self.info['backend']} {self.info['architecture']} D={self.info['embedding_dim']} "
            f"sha256 {self.info['weights_sha256'][:12]} from {model_dir}; {IMAGE_TOPIC} -> {EMBEDDING_TOPIC}")

    @property
    def errors(self) -> int:
        return self.core.errors

    def _publish(self, embedding, header) -> None:
        if safe_publish(self, self._emb_pub, embedding_to_image(embedding, header), "embedding"):
            self.embeddings_published += 1


def main(argv: list[str] | None = None) -> int:
    """`encoder_node`."""
    return run_node("encoder", EncoderNode, argv, num_threads=1)


if __name__ == "__main__":
    sys.exit(main())
