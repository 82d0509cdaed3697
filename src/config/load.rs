//! Placeholder: filled by the config loader.
use super::Config;
pub struct LoadOptions;
pub struct Loaded { pub config: Config }
pub fn load(_o: &LoadOptions) -> Result<Loaded, crate::error::Error> { Ok(Loaded { config: Config::default() }) }
