"""The whole course as one run (`make course`) and the report it writes for a teacher."""
