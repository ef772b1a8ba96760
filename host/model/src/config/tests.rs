use super::*;
use crate::rope::MRope;

/// As published with Qwen2.5-VL-3B-Instruct (flat, rope_scaling, in_chans).
const FLAT_VL: &str = r#"{
  "architectures": ["Qwen2_5_VLForConditionalGeneration"], "bos_token_id": 151643, "eos_token_id": 151645,
  "vision_start_token_id": 151652, "vision_end_token_id": 151653, "image_token_id": 151655,
  "video_token_id": 151656, "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 11008,
  "max_position_embeddings": 128000, "model_type": "qwen2_5_vl", "num_attention_heads": 16,
  "num_hidden_layers": 36, "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
  "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16", "use_sliding_window": false,
  "vision_config": {"depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420,
    "num_heads": 16, "in_chans": 3, "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2,
    "spatial_patch_size": 14, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2, "temporal_patch_size": 2},
  "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "vocab_size": 151936
}"#;

#[test]
fn flat_published_vl_config() {
    let c = ModelConfig::from_json_str(FLAT_VL, Path::new("config.json")).unwrap();
    assert_eq!(c.architecture, Architecture::Qwen2_5Vl);
    assert_eq!(c.text.hidden_size, 2048);
    assert_eq!(c.text.head_dim, 128);
    assert_eq!(c.text.num_key_value_heads, 2);
    assert_eq!(c.text.rope_theta, 1_000_000.0);
    assert_eq!(c.text.mrope, Some(MRope::Sections(vec![16, 24, 24])));
    assert!(c.text.tie_word_embeddings);
    assert_eq!(c.text.vocab_size, 151936);
    let v = c.vision.unwrap();
    assert_eq!(v.fullatt_block_indexes, vec![7, 15, 23, 31]);
    assert_eq!(v.in_channels, 3);
    assert_eq!(v.patch_dim(), 1176);
    assert_eq!(c.image_token_id, Some(151655));
    assert_eq!(c.vision_start_token_id, Some(151652));
    assert_eq!(c.eos_token_ids, vec![151645]);
}

#[test]
fn nested_transformers5_vl_config() {
    let s = r#"{"architectures": ["Qwen2_5_VLForConditionalGeneration"], "image_token_id": 292,
      "model_type": "qwen2_5_vl", "tie_word_embeddings": false, "vision_start_token_id": 290,
      "text_config": {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300, "rms_norm_eps": 1e-5,
        "eos_token_id": [294, 295], "pad_token_id": 0,
        "rope_parameters": {"mrope_section": [2, 3, 3], "rope_theta": 5000.0, "rope_type": "default"}},
      "vision_config": {"depth": 2, "hidden_size": 32, "intermediate_size": 48, "num_heads": 2,
        "out_hidden_size": 64, "fullatt_block_indexes": [1], "in_channels": 3,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "axial"}}}"#;
    let c = ModelConfig::from_json_str(s, Path::new("x/config.json")).unwrap();
    assert_eq!(c.text.rope_theta, 5000.0);
    assert_eq!(c.text.mrope, Some(MRope::Sections(vec![2, 3, 3])));
    assert_eq!(c.text.rms_norm_eps, 1e-5);
    assert!(!c.text.tie_word_embeddings);
    assert_eq!(c.eos_token_ids, vec![294, 295]);
    assert_eq!(c.pad_token_id, Some(0));
    assert_eq!(c.image_token_id, Some(292));
    assert_eq!(c.vision.unwrap().depth, 2);
}

#[test]
fn qwen2_text_config_and_errors() {
    let s = r#"{"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "intermediate_size": 96,
      "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
      "rope_theta": 100000.0, "rope_scaling": null, "tie_word_embeddings": true}"#;
    let c = ModelConfig::from_json_str(s, Path::new("config.json")).unwrap();
    assert_eq!(c.architecture, Architecture::Qwen2);
    assert_eq!(c.text.rope_theta, 100000.0);
    assert_eq!(c.text.mrope, None);
    assert!(c.vision.is_none());

    let unknown = s.replace("Qwen2ForCausalLM", "LlamaForCausalLM");
    let err = ModelConfig::from_json_str(&unknown, Path::new("m/config.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("m/config.json") && err.contains("\"LlamaForCausalLM\""),
        "{err}"
    );

    let missing = s.replace("\"vocab_size\": 300,", "");
    let err = ModelConfig::from_json_str(&missing, Path::new("config.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing key \"vocab_size\""), "{err}");

    let wrong = s.replace("\"hidden_size\": 64", "\"hidden_size\": \"64\"");
    let err = ModelConfig::from_json_str(&wrong, Path::new("config.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"hidden_size\" must be an integer"), "{err}");

    let err = ModelConfig::from_json_str("{not json", Path::new("c.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("c.json is not valid JSON"), "{err}");
}

/// As published with Qwen3-VL-2B-Instruct (transformers 4.57: rope_scaling in
/// text_config, tied embeddings at the top).
const QWEN3_VL: &str = r#"{
  "architectures": ["Qwen3VLForConditionalGeneration"], "image_token_id": 151655, "model_type": "qwen3_vl",
  "text_config": {"attention_bias": false, "bos_token_id": 151643, "dtype": "bfloat16", "eos_token_id": 151645,
    "head_dim": 128, "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 6144,
    "max_position_embeddings": 262144, "model_type": "qwen3_vl_text", "num_attention_heads": 16,
    "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
    "rope_scaling": {"mrope_interleaved": true, "mrope_section": [24, 20, 20], "rope_type": "default"},
    "rope_theta": 5000000, "tie_word_embeddings": true, "use_cache": true, "vocab_size": 151936},
  "tie_word_embeddings": true, "video_token_id": 151656,
  "vision_config": {"deepstack_visual_indexes": [5, 11, 17], "depth": 24, "hidden_act": "gelu_pytorch_tanh",
    "hidden_size": 1024, "in_channels": 3, "initializer_range": 0.02, "intermediate_size": 4096,
    "model_type": "qwen3_vl", "num_heads": 16, "num_position_embeddings": 2304, "out_hidden_size": 2048,
    "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2},
  "vision_end_token_id": 151653, "vision_start_token_id": 151652
}"#;

#[test]
fn qwen3_vl_config() {
    let c = ModelConfig::from_json_str(QWEN3_VL, Path::new("config.json")).unwrap();
    assert_eq!(c.architecture, Architecture::Qwen3Vl);
    assert!(c.architecture.is_multimodal());
    assert_eq!(c.text.head_dim, 128);
    assert_eq!(c.text.rope_theta, 5_000_000.0);
    assert_eq!(c.text.mrope, Some(MRope::Interleaved(vec![24, 20, 20])));
    assert!(!c.text.attention_bias);
    assert!(c.text.tie_word_embeddings);
    let v = c.vision.unwrap();
    assert_eq!(v.patch_dim(), 1536);
    assert_eq!(v.deepstack_visual_indexes, vec![5, 11, 17]);
    assert_eq!(v.num_position_embeddings, 2304);
    assert_eq!(c.eos_token_ids, vec![151645]);
    assert_eq!(c.image_token_id, Some(151655));

    let bad = QWEN3_VL.replace("[5, 11, 17]", "[5, 11, 24]");
    let err = ModelConfig::from_json_str(&bad, Path::new("m/config.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("m/config.json") && err.contains("deepstack_visual_indexes holds 24"),
        "{err}"
    );
    let bad = QWEN3_VL.replace("2304", "2300");
    let err = ModelConfig::from_json_str(&bad, Path::new("config.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a square grid"), "{err}");
}

#[test]
fn qwen3_text_config_defaults() {
    // Qwen3's head_dim defaults to 128 whatever hidden_size / heads is.
    let s = r#"{"architectures": ["Qwen3ForCausalLM"], "hidden_size": 2560, "intermediate_size": 9728,
      "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 151936,
      "rope_theta": 1000000, "attention_bias": false, "tie_word_embeddings": true}"#;
    let c = ModelConfig::from_json_str(s, Path::new("config.json")).unwrap();
    assert_eq!(c.architecture, Architecture::Qwen3);
    assert!(!c.architecture.is_multimodal());
    assert_eq!(c.text.head_dim, 128);
    assert_eq!(c.text.mrope, None);
    assert!(!c.text.attention_bias);
    assert!(c.vision.is_none());
}
