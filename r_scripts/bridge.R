# Helpers for crosscheck/rbridge.py: building and taking apart the values that cross between
# Python and R. Sourced into the global environment by the bridge; plain R, no side effects.
#   Rscript -e 'source("r_scripts/bridge.R"); str(cc_column_types(data.frame(a = 1)))'

suppressPackageStartupMessages(library(Matrix))

cc_is_matrix_pkg <- function(x) is(x, "Matrix")

# Compressed sparse column parts of any Matrix-package matrix (0-based i, p as in scipy).
cc_sparse_parts <- function(x) {
  x <- as(as(as(x, "CsparseMatrix"), "generalMatrix"), "dMatrix")
  list(x@i, x@p, x@x, x@Dim)
}

cc_make_factor <- function(codes, levels, ordered)
  structure(codes, levels = levels, class = if (ordered) c("ordered", "factor") else "factor")

cc_make_data_frame <- function(cols, names, nrow) list2DF(setNames(cols, names), nrow = nrow)

cc_set_names <- function(x, names) setNames(x, names)

cc_set_dim <- function(x, dim) { dim(x) <- dim; x }

# Class ("factor", "ordered", "numeric", "integer", "logical", "character", ...) and levels of each
# column of a data.frame, given directly or by the name of a global variable.
cc_column_types <- function(df) {
  if (is.character(df)) df <- get(df, envir = globalenv())
  lapply(df, function(col) list(
    class = if (is.factor(col)) class(col)[1L] else if (is.double(col)) "numeric" else class(col)[1L],
    levels = if (is.factor(col)) I(levels(col)) else NULL))
}

# Errors of bridge calls come back as this value instead of unwinding through the embedding.
cc_guard <- function(expr)
  tryCatch(expr, error = function(e)
    structure(list(message = conditionMessage(e)), class = "cc_bridge_error"))

# The value of the last expression, or NULL if it is invisible (assignments, definitions).
cc_eval <- function(exprs) cc_guard({
  last <- list(value = NULL, visible = FALSE)
  for (e in exprs) last <- withVisible(eval(e, globalenv()))
  if (last$visible) last$value
})

cc_call <- function(fname, args) cc_guard(do.call(fname, args, envir = globalenv()))
