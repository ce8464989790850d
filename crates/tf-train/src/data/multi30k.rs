//! Multi30k task 1 (Elliott et al., 2016): English and German descriptions of Flickr30k
//! images, sentence-aligned, in the dataset's public repository; the files the translation
//! task reads, with the sizes and SHA-256 sums they are verified against after downloading.

use std::path::{Path, PathBuf};

use crate::data::download::RemoteFile;

/// Where the raw task-1 files are published: the `data/task1/raw/` folder of the public
/// `multi30k/dataset` repository.
pub const URL: &str = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw";

/// Where `tf data multi30k` puts the files, and where the translation task reads them, relative
/// to the working directory.
pub const DEFAULT_DIR: &str = "data/multi30k";

/// The environment variable that names another directory holding the files (a shared copy).
pub const DIR_VARIABLE: &str = "TF_MULTI30K";

/// The train, val and test_2016_flickr splits in German and English, gzipped as published.
pub const FILES: [RemoteFile; 6] = [
    RemoteFile {
        name: "train.de.gz",
        size: 637_044,
        sha256: "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    },
    RemoteFile {
        name: "train.en.gz",
        size: 568_929,
        sha256: "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    },
    RemoteFile {
        name: "val.de.gz",
        size: 24_681,
        sha256: "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    },
    RemoteFile {
        name: "val.en.gz",
        size: 21_650,
        sha256: "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    },
    RemoteFile {
        name: "test_2016_flickr.de.gz",
        size: 22_890,
        sha256: "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    },
    RemoteFile {
        name: "test_2016_flickr.en.gz",
        size: 21_077,
        sha256: "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    },
];

/// What a user of the data agrees to, printed after a download.
pub const TERMS: &str = "\
Multi30k (Elliott, Frank, Sima'an & Specia, 2016, \"Multi30K: Multilingual English-German Image
Descriptions\", doi:10.18653/v1/W16-3210) is distributed for research. Its English sentences
are the Flickr30k descriptions (Young et al., 2014, TACL 2:67-78), the German ones translations
of them made for Multi30k. Use them for research and teaching, check both data sets' terms
before any other use, and cite both papers when you publish results on them.";

/// The directory the translation task reads by default: `$TF_MULTI30K` if set, else
/// [`DEFAULT_DIR`].
pub fn default_dir() -> PathBuf {
    std::env::var_os(DIR_VARIABLE).map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from)
}

/// The files of [`FILES`] that `dir` lacks (in either the gzipped or the plain form).
pub fn missing_files(dir: &Path) -> Vec<&'static str> {
    FILES
        .iter()
        .map(|file| file.name)
        .filter(|name| {
            let plain = name.trim_end_matches(".gz");
            !dir.join(name).is_file() && !dir.join(plain).is_file()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::corpus::read_split;
    use crate::data::download::sha256_of_file;
    use crate::testing::temp_dir;

    #[test]
    fn a_directory_lacking_files_names_them() {
        let dir = temp_dir("multi30k-missing");
        assert_eq!(missing_files(&dir).len(), FILES.len());
        std::fs::write(dir.join("val.de"), "Ein Hund.\n").unwrap();
        std::fs::write(dir.join("val.en.gz"), "").unwrap();
        let missing = missing_files(&dir);
        assert!(!missing.contains(&"val.de.gz") && !missing.contains(&"val.en.gz"));
        assert_eq!(missing.len(), FILES.len() - 2);
    }

    #[test]
    fn the_recorded_checksums_are_those_of_the_shared_copy() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/multi30k");
        if !dir.is_dir() {
            return; // the shared copy is beside the repository on the project's machines only
        }
        for file in &FILES {
            let path = dir.join(file.name);
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                file.size,
                "{}",
                file.name
            );
            assert_eq!(sha256_of_file(&path).unwrap(), file.sha256, "{}", file.name);
        }
        let val = read_split(&dir, "val", "de", "en").unwrap();
        assert_eq!(val.len(), 1014);
    }
}
