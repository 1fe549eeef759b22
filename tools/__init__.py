"""Tools that no experiment imports: report generator, toy data, downloads and publishing, benchmark."""
