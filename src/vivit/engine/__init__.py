"""Training, evaluation, prediction and export: the engine behind `vivit train/eval/predict/export/demo`."""

from vivit.engine.checkpoint import load_checkpoint, load_model, save_checkpoint
from vivit.engine.config import TrainConfig, load_config
from vivit.engine.evaluate import evaluate_checkpoint
from vivit.engine.export import export_onnx
from vivit.engine.predict import predict
from vivit.engine.train import train, train_step

__all__ = ["TrainConfig", "evaluate_checkpoint", "export_onnx", "load_checkpoint", "load_config", "load_model",
           "predict", "save_checkpoint", "train", "train_step"]
