//! The measuring loop every in-process engine shares (llama.cpp, candle, MLX): warmup,
//! repetitions, the seeded random prompts of synthetic scenarios, greedy picking, timestamps,
//! and the figures (TTFT, TPOT, pp/tg rates, output ids for the agreement check). An engine only
//! loads its model, tokenizes ([`PromptTokenizer`]) and runs forward passes ([`StepModel`]), so
//! the engines differ in nothing but the engine: the same warmup, the same random ids drawn in
//! the same order, the same greedy rule and the same definitions.

use super::{finish_rep, synthetic_tg_tps, text_tg_tps, BackendError, RepTimer, SampleSink};
use crate::backend::BenchJob;
use crate::formats::tokenizer::ModelTokenizer;
use crate::results::{Millis, Sample};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::{Duration, Instant};

/// The llama.cpp backend's default batch: the warmup prompt is cut to it in every backend, so
/// all draw the same number of random tokens.
const WARMUP_BATCH: usize = 2048;

/// A loaded model: one forward pass at a time, returning the last position's logits.
pub(crate) trait StepModel {
    /// Empties the KV cache (before every repetition).
    fn reset(&mut self) -> Result<(), BackendError>;
    /// Runs `ids` at positions `pos..pos + ids.len()` and waits for the result. With `logits`,
    /// returns the last position's logits; without (warmups, synthetic prompts and decodes,
    /// whose output nobody reads, as llama-bench), an engine may skip copying them out, but an
    /// engine whose work is lazy must still run the pass.
    fn forward(&mut self, ids: &[u32], pos: usize, logits: bool) -> Result<Vec<f32>, BackendError>;
    /// The longest sequence (prompt + generation) the model supports.
    fn max_seq(&self) -> usize;
    /// Prompt tokens of the warmup run (llama.cpp: its logical batch).
    fn warmup_batch(&self) -> usize {
        WARMUP_BATCH
    }
}

/// A model's tokenizer, as the loop needs it.
pub(crate) trait PromptTokenizer {
    fn vocab_size(&self) -> usize;
    /// Token ids for `text`, special tokens parsed, BOS added when the model asks for it.
    fn encode(&self, text: &str) -> Result<Vec<u32>, BackendError>;
    /// The BOS id when the model adds one.
    fn bos(&self) -> Option<u32>;
    /// Whether `id` ends generation.
    fn is_eog(&self, id: u32) -> bool;
    /// The model's chat template, when it has one.
    fn chat_template(&self) -> Option<&str>;
}

impl PromptTokenizer for ModelTokenizer {
    fn vocab_size(&self) -> usize {
        ModelTokenizer::vocab_size(self)
    }
    fn encode(&self, text: &str) -> Result<Vec<u32>, BackendError> {
        ModelTokenizer::encode(self, text).map_err(BackendError::Engine)
    }
    fn bos(&self) -> Option<u32> {
        self.bos.filter(|_| self.add_bos)
    }
    fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }
    fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}

/// The prompt text of a text scenario: chat-templated when the scenario asks and the model has
/// a template (llama.cpp's template engine, [`super::chat`]); None for a synthetic scenario.
pub(crate) fn prompt_text(
    scenario: &crate::job::Scenario,
    tok: &dyn PromptTokenizer,
) -> Result<Option<String>, BackendError> {
    Ok(match (&scenario.prompt, scenario.chat) {
        (Some(text), true) => match tok.chat_template() {
            Some(tmpl) => Some(
                super::chat::apply(tmpl, scenario.system.as_deref(), text)
                    .map_err(BackendError::Engine)?,
            ),
            None => Some(text.clone()),
        },
        (Some(text), false) => Some(text.clone()),
        (None, _) => None,
    })
}

/// `threads`, or the machine's physical cores (llama-bench's default).
pub(crate) fn threads_or_default(threads: Option<u32>) -> usize {
    threads.map_or_else(
        || super::llama_cpp::default_threads() as usize,
        |t| t as usize,
    )
}

/// The model file or directory a job runs.
pub(crate) fn model_path(job: &BenchJob) -> Result<std::path::PathBuf, BackendError> {
    job.model.local_path().ok_or_else(|| {
        BackendError::Engine(format!("model `{}` has no local file", job.model.name))
    })
}

/// What the loop needs besides the model and the tokenizer.
pub(crate) struct DriveOpts {
    /// Names the engine in messages.
    pub engine: &'static str,
    pub seed: u64,
    pub ignore_eos: bool,
}

/// Greedy choice; with `ignore_eos`, the best token that does not end generation.
pub(crate) fn pick(logits: &[f32], tok: &dyn PromptTokenizer, ignore_eos: bool) -> u32 {
    let argmax = |skip_eog: bool| {
        let mut best: Option<(usize, f32)> = None;
        for (i, &l) in logits.iter().enumerate() {
            if best.is_none_or(|(_, b)| l > b) && !(skip_eog && tok.is_eog(i as u32)) {
                best = Some((i, l));
            }
        }
        best.map(|(i, _)| i as u32).unwrap_or(0)
    };
    // The first maximum, as llama.cpp's greedy sampler; a second pass only when it ends
    // generation and `ignore_eos` asks for the best token that does not.
    let t = argmax(false);
    if ignore_eos && tok.is_eog(t) {
        argmax(true)
    } else {
        t
    }
}

/// Loads the model and its tokenizer (timed: every sample's "load"), then runs the job's
/// warmups and repetitions on it, one sample per repetition.
///
/// Long on purpose: the one measuring loop of the in-process engines; kept whole so that what is
/// timed, and in which order, reads in one place.
pub(crate) fn drive<M: StepModel, T: PromptTokenizer>(
    job: &BenchJob,
    job_id: &str,
    sink: &mut dyn SampleSink,
    o: &DriveOpts,
    load: impl FnOnce() -> Result<(M, T), BackendError>,
) -> Result<(), BackendError> {
    let load_start = Instant::now();
    let (mut model, tok) = load()?;
    let load_ms = Millis::from_duration(load_start.elapsed());
    let (model, tok): (&mut dyn StepModel, &dyn PromptTokenizer) = (&mut model, &tok);
    let fwd = |m: &mut dyn StepModel,
               ids: &[u32],
               pos: usize,
               logits: bool|
     -> Result<(Vec<f32>, Duration), BackendError> {
        let t0 = Instant::now();
        let out = m.forward(ids, pos, logits)?;
        Ok((out, t0.elapsed()))
    };

    let scenario = &job.scenario;
    let n_vocab = tok.vocab_size().max(1) as i32;
    let n_prompt = scenario.prompt_tokens.unwrap_or(0) as usize;
    let n_gen = scenario.max_tokens as usize;
    let prompt_text = prompt_text(scenario, tok)?;
    let synthetic_prompt = if prompt_text.is_none() && n_prompt > 1 {
        n_prompt
    } else {
        0
    };
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
    let random_token = |rng: &mut ChaCha8Rng| rng.random_range(0..n_vocab) as u32;
    let bos = tok.bos();
    let warmup_batch = model.warmup_batch().max(1);

    // Warmup, as the llama.cpp backend (and llama-bench): an untimed prompt run and a one-token
    // generation, drawing the same random tokens; `warmup: 0` (llama-bench's --no-warmup) skips
    // it.
    for _ in 0..job.warmup {
        model.reset()?;
        let warm: Vec<u32> = match &prompt_text {
            Some(t) => tok.encode(t)?.into_iter().take(warmup_batch).collect(),
            None => (0..synthetic_prompt.min(warmup_batch))
                .map(|_| random_token(&mut rng))
                .collect(),
        };
        if !warm.is_empty() {
            fwd(model, &warm, 0, false)?;
        }
        if n_gen > 0 {
            model.reset()?;
            let one = [bos.unwrap_or_else(|| random_token(&mut rng))];
            fwd(model, &one, 0, false)?;
        }
    }

    let depth = scenario.depth();
    let mut reps = job.repetitions();
    for rep in 0..job.runs {
        model.reset()?;
        // llama-bench's -d: the KV cache holds `depth` tokens before the measured part; they
        // are processed untimed, in batches as a prompt is.
        if depth > 0 {
            let mut filler = Vec::with_capacity(depth);
            filler.extend(bos);
            while filler.len() < depth {
                filler.push(random_token(&mut rng));
            }
            if depth + synthetic_prompt + n_gen > model.max_seq() {
                return Err(BackendError::Engine(format!(
                    "depth {depth} + prompt + generation ({n_gen}) exceed the {} positions \
                     {}'s model supports",
                    model.max_seq(),
                    o.engine
                )));
            }
            for (i, chunk) in filler.chunks(warmup_batch).enumerate() {
                fwd(model, chunk, i * warmup_batch, false)?;
            }
        }
        let mut s = job.blank_sample(job_id, rep, false);
        s.load_ms = Some(load_ms);
        let timer = RepTimer::start();
        let mut sample_time = Duration::ZERO;

        let (tokens, tokenize) = match &prompt_text {
            Some(t) => {
                let t0 = Instant::now();
                let ids = tok.encode(t)?;
                (ids, t0.elapsed())
            }
            None => {
                let mut ids = Vec::with_capacity(synthetic_prompt);
                if synthetic_prompt > 0 {
                    ids.extend(bos);
                }
                while ids.len() < synthetic_prompt {
                    ids.push(random_token(&mut rng));
                }
                (ids, Duration::ZERO)
            }
        };
        if depth + tokens.len() + n_gen > model.max_seq() {
            return Err(BackendError::Engine(format!(
                "prompt ({} tokens) + generation ({n_gen}) exceed the {} positions {}'s \
                 model supports",
                tokens.len(),
                model.max_seq(),
                o.engine
            )));
        }
        s.tokenize_ms = Some(Millis::from_duration(tokenize));
        s.prompt_tokens = Some(if prompt_text.is_none() {
            n_prompt
        } else {
            tokens.len()
        } as u64);
        // The prompt's logits are read only to pick the first token of a text prompt.
        let text_gen = prompt_text.is_some() && n_gen > 0;
        let (mut logits, pp_time) = if tokens.is_empty() {
            (Vec::new(), Duration::ZERO)
        } else {
            fwd(model, &tokens, depth, text_gen)?
        };
        if !tokens.is_empty() {
            s.pp_tps = Some(tokens.len() as f64 / pp_time.as_secs_f64().max(1e-9));
        }

        let mut pos = depth + tokens.len();
        let mut decode_time = Duration::ZERO;
        let gen_start = timer.at();
        if text_gen {
            let t0 = Instant::now();
            let mut next = pick(&logits, tok, o.ignore_eos);
            sample_time += t0.elapsed();
            s.token_ms.push(timer.at());
            let record = rep == 0;
            if record {
                s.prompt_digest = Some(Sample::digest_ids(&tokens));
                s.output_ids.push(next);
            }
            while s.token_ms.len() < n_gen {
                if !o.ignore_eos && tok.is_eog(next) {
                    break;
                }
                let (l, d) = fwd(model, &[next], pos, true)?;
                logits = l;
                decode_time += d;
                pos += 1;
                let t1 = Instant::now();
                next = pick(&logits, tok, o.ignore_eos);
                sample_time += t1.elapsed();
                s.token_ms.push(timer.at());
                if record {
                    s.output_ids.push(next);
                }
            }
            s.tg_tps = text_tg_tps(&s.token_ms);
        } else if n_gen > 0 {
            let mut next = match (tokens.is_empty(), bos) {
                (true, Some(b)) => b,
                _ => random_token(&mut rng),
            };
            for _ in 0..n_gen {
                decode_time += fwd(model, &[next], pos, false)?.1;
                pos += 1;
                s.token_ms.push(timer.at());
                next = random_token(&mut rng);
            }
            s.tg_tps = Some(synthetic_tg_tps(&s.token_ms, gen_start));
        }
        finish_rep(&mut s, &timer, sample_time);
        tracing::debug!(
            "rep {rep}: prompt {:?}, generation decode {:?}, sampling {:?}",
            pp_time,
            decode_time,
            sample_time
        );
        let enough = reps.enough_after(&s);
        sink.sample(s)?;
        if enough {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_pick_skips_end_of_generation_only_when_asked() {
        let tok = ModelTokenizer {
            tokenizer: tokenizers::Tokenizer::new(tokenizers::models::bpe::BPE::default()),
            eog: [2].into_iter().collect(),
            bos: None,
            eos: Some(2),
            add_bos: false,
            chat_template: None,
        };
        let logits = [0.1, 0.5, 0.9, 0.9, 0.2];
        assert_eq!(pick(&logits, &tok, false), 2, "the first maximum");
        assert_eq!(
            pick(&logits, &tok, true),
            3,
            "the best that does not end generation"
        );
        assert_eq!(pick(&[0.1, 0.5, 0.2], &tok, true), 1);
    }
}
