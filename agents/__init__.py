"""Policies and their text conditioning: the sentence encoder, MotionGPT, supervised pretraining."""

from transformers import AutoConfig, AutoModelForCausalLM

from agents.motion_gpt import MotionGPTConfig, MotionGPTForCausalLM, MotionGPTModel, MotionKVCache

AutoConfig.register("motion_gpt", MotionGPTConfig)
AutoModelForCausalLM.register(MotionGPTConfig, MotionGPTForCausalLM)

__all__ = ["MotionGPTConfig", "MotionGPTForCausalLM", "MotionGPTModel", "MotionKVCache"]
