//! `.env`: as Centrifugo at start-up, the server reads a `.env` file of the working directory
//! (when there is one) into its environment before the configuration is loaded. Variables
//! already set in the environment win over the file's. Only the server does this; the helper
//! commands read the environment as it is.

use std::path::Path;

/// Loads the `.env` file at `path` into the process environment, leaving the variables already
/// set untouched. `Ok(None)` when there is no such file, `Ok(Some(n))` with the number of
/// variables set; an error (nothing set) when the file does not parse.
///
/// Call it before any thread starts: it changes the process environment.
pub fn load(path: &Path) -> Result<Option<usize>, String> {
    let Some(vars) = read(path)? else { return Ok(None) };
    let mut set = 0;
    for (k, v) in vars {
        if std::env::var_os(&k).is_none() {
            std::env::set_var(&k, v);
            set += 1;
        }
    }
    Ok(Some(set))
}

/// The variables of the `.env` file at `path`, in order (`${VAR}` expanded from the
/// environment and the lines above); `Ok(None)` when there is no such file.
pub fn read(path: &Path) -> Result<Option<Vec<(String, String)>>, String> {
    if !path.is_file() {
        return Ok(None);
    }
    let shown = path.display();
    dotenvy::from_path_iter(path)
        .map_err(|e| format!("error loading {shown} file: {e}"))?
        .collect::<Result<Vec<(String, String)>, _>>()
        .map(Some)
        .map_err(|e| match e {
            dotenvy::Error::LineParse(line, at) => {
                format!("error loading {shown} file: cannot parse {line:?} (at character {at})")
            }
            e => format!("error loading {shown} file: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::read;

    #[test]
    fn missing_file_bad_line_and_syntax() {
        let dir = std::env::temp_dir().join(format!("gyre-dotenv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(read(&dir.join(".env")), Ok(None));
        let bad = dir.join("bad.env");
        std::fs::write(&bad, "GYRE_A=1\nnot a line\n").unwrap();
        let e = read(&bad).unwrap_err();
        assert!(e.contains("bad.env") && e.contains("not a line"), "{e}");
        let good = dir.join(".env");
        std::fs::write(&good, "# comment\nexport GYRE_B=\"two words\"\nGYRE_C='${GYRE_B}'\nGYRE_D=${GYRE_B}!\n")
            .unwrap();
        let vars = read(&good).unwrap().unwrap();
        let want = [("GYRE_B", "two words"), ("GYRE_C", "${GYRE_B}"), ("GYRE_D", "two words!")];
        assert_eq!(vars, want.map(|(k, v)| (k.to_string(), v.to_string())));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
