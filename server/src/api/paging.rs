//! The page of a list call: size, offset from the page token, and the next
//! token. Tokens carry a fingerprint of the query, so a token cannot be
//! replayed against another filter.

use tonic::Status;

use crate::managed::{decode_page_token, encode_page_token, fingerprint, page_size};

pub struct Page {
    pub limit: usize,
    pub offset: usize,
    print: String,
}

impl Page {
    /// `query` names the list and everything that shapes its order (filter, sort).
    pub fn of(page_size_asked: i32, page_token: &str, query: &[&str]) -> Result<Self, Status> {
        let limit = page_size(
            usize::try_from(page_size_asked)
                .map_err(|_| Status::invalid_argument("page_size must not be negative"))?,
        )?;
        let print = fingerprint(query);
        let offset = if page_token.is_empty() {
            0
        } else {
            decode_page_token(page_token, &print)?
        };
        Ok(Page {
            limit,
            offset,
            print,
        })
    }

    /// The next token, when `shown` items of `total` leave more to read.
    pub fn next_of_total(&self, shown: usize, total: u64) -> String {
        let next = self.offset + shown;
        if (next as u64) < total && shown > 0 {
            encode_page_token(next, &self.print)
        } else {
            String::new()
        }
    }

    /// For stores that read one more than asked (`limit + 1`) to tell whether
    /// another page follows: drops the extra item and returns the next token.
    pub fn trim<T>(&self, items: &mut Vec<T>) -> String {
        if items.len() > self.limit {
            items.truncate(self.limit);
            encode_page_token(self.offset + self.limit, &self.print)
        } else {
            String::new()
        }
    }
}
