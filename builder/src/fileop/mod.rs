//! File actions of the build graph (COPY, ADD, WORKDIR, inline files) and the content
//! checksums that put exactly the files a COPY selects into its cache key.
