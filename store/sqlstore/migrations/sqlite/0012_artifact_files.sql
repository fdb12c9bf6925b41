-- Report artifacts' bytes move out of the row into files beside the
-- database (store/sqlstore/artifactfiles.go): as a row, a 2 MiB PDF is 512
-- overflow pages, written as 512 WAL frames inside the request, copied
-- again by the checkpoint and read back page by page for its delivery.
-- data_file names the file (32 hex digits, in the directory PATH-artifacts);
-- rows written before keep their bytes in data, which is still read.
ALTER TABLE report_artifacts ADD COLUMN data_file TEXT;
