//! Chat templating shared by the in-process backends.
//!
//! Every backend must feed the engine the same prompt text, or neither the speed figures nor the
//! output agreement would compare. llama.cpp's own template engine (`llama_chat_apply_template`,
//! which recognises the common templates — ChatML, Llama 2/3, Mistral, Gemma, … — from the
//! template text) is used for all of them, with the template read from the model: GGUF metadata
//! `tokenizer.chat_template` or `tokenizer_config.json`'s `chat_template`.

use std::ffi::CString;
use std::os::raw::c_char;

/// Applies `template` to an optional system message and one user message, with the assistant
/// prefix appended (`add_generation_prompt`).
pub fn apply(template: &str, system: Option<&str>, user: &str) -> Result<String, String> {
    let cstr = |s: &str, what: &str| {
        CString::new(s).map_err(|_| format!("the {what} contains a NUL character"))
    };
    let tmpl = cstr(template, "chat template")?;
    let mut owned = Vec::new();
    if let Some(sys) = system {
        owned.push((cstr("system", "role")?, cstr(sys, "system prompt")?));
    }
    owned.push((cstr("user", "role")?, cstr(user, "prompt")?));
    let msgs: Vec<llama_cpp_sys_2::llama_chat_message> = owned
        .iter()
        .map(|(role, content)| llama_cpp_sys_2::llama_chat_message {
            role: role.as_ptr(),
            content: content.as_ptr(),
        })
        .collect();
    let mut len = owned
        .iter()
        .map(|(r, c)| r.as_bytes().len() + c.as_bytes().len())
        .sum::<usize>()
        * 2
        + 256;
    for _ in 0..2 {
        let mut buf = vec![0u8; len];
        let n = call(&tmpl, &msgs, &mut buf);
        if n < 0 {
            return Err(
                "llama.cpp does not recognise this chat template (set `chat: false` in the \
                 scenario to send the prompt as is)"
                    .into(),
            );
        }
        let n = n as usize;
        if n <= buf.len() {
            buf.truncate(n);
            return String::from_utf8(buf)
                .map_err(|_| "the templated prompt is not valid UTF-8".to_string());
        }
        len = n;
    }
    Err("the templated prompt kept growing".into())
}

#[allow(unsafe_code)]
fn call(tmpl: &CString, msgs: &[llama_cpp_sys_2::llama_chat_message], buf: &mut [u8]) -> i32 {
    let cap = i32::try_from(buf.len()).unwrap_or(i32::MAX);
    // SAFETY: every pointer is valid for the call: the template and the messages' strings are
    // NUL-terminated CStrings that outlive it, `msgs` holds `msgs.len()` initialised entries,
    // and llama.cpp writes at most `cap` bytes into `buf`, which is at least that long.
    unsafe {
        llama_cpp_sys_2::llama_chat_apply_template(
            tmpl.as_ptr(),
            msgs.as_ptr(),
            msgs.len(),
            true,
            buf.as_mut_ptr().cast::<c_char>(),
            cap,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_by_name_and_by_template_text() {
        let want = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
                    <|im_start|>assistant\n";
        assert_eq!(apply("chatml", Some("Be brief."), "Hi").unwrap(), want);
        let text = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + \
                    message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";
        assert_eq!(apply(text, Some("Be brief."), "Hi").unwrap(), want);
    }

    #[test]
    fn unknown_template_is_an_error() {
        assert!(apply("no such template", None, "Hi").is_err());
    }
}
