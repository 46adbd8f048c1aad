"""Serve a base model with LoRA adapters on a real engine, and prove the adapters are applied.

Engines run as their own programs (vLLM, LLaMA-Factory, llama-cpp-python), never imported.
"""

from .client import ModelInfo, ask, list_models
from .endpoints import endpoints_block, write_endpoints
from .engines import ENGINES, plan_launch
from .launch import Launch, Program
from .preflight import check_adapters, check_model, check_port_free, preflight
from .probe import PROBE_PROMPTS, AdapterVerdict, ProbeReport, compare_adapters
from .process import EngineProcess
from .spec import Adapter, EngineName, ServeSpec, load_yaml_spec, parse_engine, parse_lora
from .supervisor import ServeOptions, ServeResult, supervise

__all__ = [
    "ENGINES",
    "PROBE_PROMPTS",
    "Adapter",
    "AdapterVerdict",
    "EngineName",
    "EngineProcess",
    "Launch",
    "ModelInfo",
    "ProbeReport",
    "Program",
    "ServeOptions",
    "ServeResult",
    "ServeSpec",
    "ask",
    "check_adapters",
    "check_model",
    "check_port_free",
    "compare_adapters",
    "endpoints_block",
    "list_models",
    "load_yaml_spec",
    "parse_engine",
    "parse_lora",
    "plan_launch",
    "preflight",
    "supervise",
    "write_endpoints",
]
