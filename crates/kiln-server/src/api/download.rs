//! `Content-Disposition` for downloads (RFC 6266): a plain-ASCII
//! `filename` for old clients and `filename*` with the real UTF-8 name, so
//! a file called `数据 集.csv` downloads under its own name and never
//! breaks the header.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// What RFC 5987's `attr-char` allows unencoded.
const ATTR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

pub fn attachment(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
        utf8_percent_encode(name, ATTR)
    )
}

#[cfg(test)]
mod tests {
    use super::attachment;

    #[test]
    fn any_name_makes_a_valid_header_with_the_real_name() {
        assert_eq!(
            attachment("loss.csv"),
            "attachment; filename=\"loss.csv\"; filename*=UTF-8''loss.csv"
        );
        let h = attachment("数据 集\"1\".csv");
        assert_eq!(
            h,
            "attachment; filename=\"__ __1_.csv\"; \
             filename*=UTF-8''%E6%95%B0%E6%8D%AE%20%E9%9B%86%221%22.csv"
        );
        for name in ["a\nb", "tab\there", "ü", "\\back"] {
            assert!(
                axum::http::HeaderValue::from_str(&attachment(name)).is_ok(),
                "{name}"
            );
        }
    }
}
