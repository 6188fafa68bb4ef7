//! Tokenizers of model files (candle, MLX and the converter use them): `tokenizer.json` when the model has one, otherwise one
//! rebuilt from the vocabulary a GGUF file embeds (`tokenizer.ggml.*`), so that the ids are the
//! ones llama.cpp produces for the same text.
//!
//! Supported GGUF vocabularies: `tokenizer.ggml.model = "gpt2"` (byte-level BPE) with the
//! pre-tokenizers llama.cpp names `default`/`gpt-2`, `smollm`, `llama-bpe`/`llama3` and `qwen2`.
//! Anything else is refused with a message that names the value (a wrong tokenizer would make
//! every count and every agreement figure wrong without a sign).

use candle_core::quantized::gguf_file::Value;
use std::collections::{BTreeSet, HashMap};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// Texts llama.cpp treats as end-of-generation when the vocabulary marks them as control tokens
/// (llama-vocab.cpp), besides the declared EOS/EOT ids.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
    "<|end_of_text|>",
];

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A tokenizer with what generation needs to know about it.
pub struct ModelTokenizer {
    pub tokenizer: Tokenizer,
    /// Ids that end generation (EOS, EOT and the control tokens llama.cpp treats so).
    pub eog: BTreeSet<u32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    /// The model's chat template, when it has one.
    pub chat_template: Option<String>,
}

impl ModelTokenizer {
    /// Token ids for `text`, special tokens parsed, BOS added when the model asks for it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self.tokenizer
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| format!("tokenizing: {e}"))
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }
}

fn md<'a>(m: &'a HashMap<String, Value>, key: &str) -> Result<&'a Value, String> {
    m.get(key)
        .ok_or_else(|| format!("the GGUF has no `{key}` (cannot rebuild its tokenizer)"))
}

fn md_u32(m: &HashMap<String, Value>, key: &str) -> Option<u32> {
    m.get(key).and_then(|v| v.to_u32().ok())
}

fn strings(m: &HashMap<String, Value>, key: &str) -> Result<Vec<String>, String> {
    md(m, key)?
        .to_vec()
        .map_err(|_| format!("`{key}` is not an array"))?
        .iter()
        .map(|v| {
            v.to_string()
                .cloned()
                .map_err(|_| format!("`{key}` holds a value that is not a string"))
        })
        .collect()
}

/// Rebuilds the tokenizer embedded in a GGUF's metadata.
pub fn from_gguf(m: &HashMap<String, Value>) -> Result<ModelTokenizer, String> {
    let model = md(m, "tokenizer.ggml.model")?
        .to_string()
        .map_err(|_| "`tokenizer.ggml.model` is not a string".to_string())?
        .clone();
    if model != "gpt2" {
        return Err(format!(
            "the GGUF's vocabulary is `tokenizer.ggml.model = {model}`; minerva rebuilds only \
             byte-level BPE (`gpt2`) vocabularies: give the model a tokenizer.json \
             (candle param `tokenizer: path/to/tokenizer.json`)"
        ));
    }
    let tokens = strings(m, "tokenizer.ggml.tokens")?;
    let merges = strings(m, "tokenizer.ggml.merges")?;
    let types: Vec<i32> = match m.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|_| "`tokenizer.ggml.token_type` is not an array".to_string())?
            .iter()
            .map(|t| t.to_i32().unwrap_or(1))
            .collect(),
        None => vec![1; tokens.len()],
    };
    let pre = m
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_else(|| "default".into());

    let mut vocab = tokenizers::models::bpe::Vocab::default();
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert(t.clone(), i as u32);
    }
    let merges: Vec<(String, String)> = merges
        .iter()
        .map(|line| {
            line.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| format!("merge `{line}` is not two tokens"))
        })
        .collect::<Result<_, _>>()?;
    let (pre_tokenizer, ignore_merges): (PreTokenizerWrapper, bool) = match pre.as_str() {
        "default" | "gpt-2" | "gpt2" => (ByteLevel::new(false, true, true).into(), false),
        "smollm" => (
            Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])
            .into(),
            false,
        ),
        "llama-bpe" | "llama3" | "qwen2" => {
            let regex = if pre == "qwen2" {
                QWEN2_REGEX
            } else {
                LLAMA3_REGEX
            };
            let split = Split::new(
                SplitPattern::Regex(regex.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| format!("pre-tokenizer regex: {e}"))?;
            (
                Sequence::new(vec![
                    split.into(),
                    ByteLevel::new(false, true, false).into(),
                ])
                .into(),
                pre != "qwen2",
            )
        }
        other => {
            return Err(format!(
                "the GGUF's pre-tokenizer `tokenizer.ggml.pre = {other}` is not one minerva \
                 rebuilds (default, gpt-2, smollm, llama-bpe, qwen2): give the model a \
                 tokenizer.json (candle param `tokenizer`)"
            ))
        }
    };
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(|e| format!("building the BPE model: {e}"))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

    let mut special = Vec::new();
    let mut user = Vec::new();
    for (t, ty) in tokens.iter().zip(&types) {
        match *ty {
            TOKEN_TYPE_CONTROL => special.push(AddedToken::from(t.clone(), true)),
            TOKEN_TYPE_USER_DEFINED => user.push(AddedToken::from(t.clone(), false)),
            _ => {}
        }
    }
    tokenizer
        .add_special_tokens(special)
        .map_err(|e| format!("adding control tokens: {e}"))?;
    tokenizer
        .add_tokens(user)
        .map_err(|e| format!("adding user-defined tokens: {e}"))?;

    let bos = md_u32(m, "tokenizer.ggml.bos_token_id");
    let eos = md_u32(m, "tokenizer.ggml.eos_token_id");
    // llama.cpp's default for BPE vocabularies when the key is absent.
    let add_bos = m
        .get("tokenizer.ggml.add_bos_token")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(false);
    if add_bos {
        let id = bos.ok_or("the GGUF asks for a BOS token but names none")?;
        let text = tokens
            .get(id as usize)
            .ok_or_else(|| format!("BOS id {id} is outside the vocabulary"))?;
        tokenizer.with_post_processor(Some(bos_processor(text, id)?));
    }
    let mut eog: BTreeSet<u32> = [eos, md_u32(m, "tokenizer.ggml.eot_token_id")]
        .into_iter()
        .flatten()
        .collect();
    for (i, (t, ty)) in tokens.iter().zip(&types).enumerate() {
        if *ty == TOKEN_TYPE_CONTROL && EOG_TEXTS.contains(&t.as_str()) {
            eog.insert(i as u32);
        }
    }
    let chat_template = m
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
        .cloned();
    Ok(ModelTokenizer {
        tokenizer,
        eog,
        bos,
        eos,
        add_bos,
        chat_template,
    })
}

fn bos_processor(text: &str, id: u32) -> Result<TemplateProcessing, String> {
    TemplateProcessing::builder()
        .try_single(format!("{text} $A"))
        .map_err(|e| format!("BOS template: {e}"))?
        .special_tokens(vec![(text.to_string(), id)])
        .build()
        .map_err(|e| format!("BOS template: {e}"))
}

/// The facts `tokenizer_config.json` / `config.json` give about a Hugging Face tokenizer.
#[derive(Debug, Default, serde::Deserialize)]
struct TokenizerConfig {
    #[serde(default)]
    chat_template: Option<serde_json::Value>,
    #[serde(default)]
    add_bos_token: Option<bool>,
}

/// Loads `tokenizer.json` from a model directory (or the given file), with the chat template and
/// BOS rule of `tokenizer_config.json` and the EOS ids of `config.json`.
pub fn from_dir(
    dir: &std::path::Path,
    file: Option<&std::path::Path>,
) -> Result<ModelTokenizer, String> {
    let path = file
        .map(|f| f.to_path_buf())
        .unwrap_or_else(|| dir.join("tokenizer.json"));
    let tokenizer = Tokenizer::from_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let read_json = |name: &str| -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(dir.join(name)).ok()?;
        serde_json::from_str(&text).ok()
    };
    let tcfg: TokenizerConfig = read_json("tokenizer_config.json")
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let config = read_json("config.json").unwrap_or_default();
    let ids = |v: Option<&serde_json::Value>| -> Vec<u32> {
        match v {
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().map(|n| n as u32).into_iter().collect()
            }
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|n| n.as_u64())
                .map(|n| n as u32)
                .collect(),
            _ => Vec::new(),
        }
    };
    let eos_ids = ids(config.get("eos_token_id"));
    let bos = ids(config.get("bos_token_id")).first().copied();
    let mut eog: BTreeSet<u32> = eos_ids.iter().copied().collect();
    for (id, tok) in tokenizer.get_added_tokens_decoder() {
        if tok.special && EOG_TEXTS.contains(&tok.content.as_str()) {
            eog.insert(id);
        }
    }
    // A chat template is a string, or a list of named templates (use "default").
    let chat_template = match tcfg.chat_template {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Array(list)) => list.iter().find_map(|t| {
            (t.get("name")?.as_str()? == "default")
                .then(|| t.get("template")?.as_str().map(str::to_string))
                .flatten()
        }),
        _ => None,
    };
    Ok(ModelTokenizer {
        tokenizer,
        eog,
        bos,
        eos: eos_ids.first().copied(),
        add_bos: tcfg.add_bos_token.unwrap_or(false),
        chat_template,
    })
}

/// A GGUF's `general.architecture`, as candle reads the file (empty when absent).
pub fn architecture(content: &candle_core::quantized::gguf_file::Content) -> String {
    content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default()
}
