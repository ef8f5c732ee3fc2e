-- The artifact sweep (storage/artifacts.sweep_artifacts) asks which blobs any stored file
-- still names, a batch of content hashes at a time.
CREATE INDEX artifact_files_blob ON artifact_files (blob_sha256);
