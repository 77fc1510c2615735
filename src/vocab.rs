//! Fixed words: enums that are written as one word in the store, in JSON and in metrics labels
//! (`succeeded`, `scale_in`, `catch-up`, …). [`vocabulary!`] gives each its `as_str` and `parse`,
//! `Display`, `Serialize`, and SQLite's `ToSql`/`FromSql`, so a word is spelled in one place.

/// Declare an enum whose variants are spelled as the given words.
///
/// ```ignore
/// opsd::vocabulary! {
///     /// What a run came to.
///     pub enum RunOutcome { Running = "running", Succeeded = "succeeded" }
/// }
/// ```
#[macro_export]
macro_rules! vocabulary {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            #[allow(dead_code)]
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word as stored and printed.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }

            /// The variant a stored or printed word names.
            pub fn parse(word: &str) -> Option<$name> {
                match word {
                    $($word => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(self.as_str().as_bytes())))
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                let word = v.as_str()?;
                $name::parse(word).ok_or_else(|| {
                    rusqlite::types::FromSqlError::Other(
                        format!("{word:?} is not a {}; was the history written by a newer opsd?", stringify!($name)).into(),
                    )
                })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::vocabulary! {
        enum Colour { Red = "red", DarkBlue = "dark-blue" }
    }

    #[test]
    fn words_round_trip_through_text_json_and_sqlite() {
        for c in Colour::ALL {
            assert_eq!(Colour::parse(c.as_str()), Some(*c));
        }
        assert_eq!(Colour::parse("green"), None);
        assert_eq!(serde_json::to_string(&Colour::DarkBlue).unwrap(), "\"dark-blue\"");
        let db = rusqlite::Connection::open_in_memory().unwrap();
        let back: Colour = db.query_row("SELECT ?1", [Colour::DarkBlue], |r| r.get(0)).unwrap();
        assert_eq!(back, Colour::DarkBlue);
        let bad = db.query_row("SELECT 'green'", [], |r| r.get::<_, Colour>(0));
        assert!(bad.unwrap_err().to_string().contains("not a Colour"));
    }
}
