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

# A value as four vectors, so that the bridge converts four vectors instead of every node (each
# node costs it several calls into rpy2: 10 ms for one fit's record). `node`: in pre-order, an
# integer header per node (kinds as rbridge.py's FLAT_*): NULL 0; list 1, length, named; double
# 2 / integer 3 / logical 4 / character 5: length, named, has attributes, ndim, dims; factor 6:
# length, levels, ordered; data.frame 7: columns, rows, character row names; Matrix 8: nnz,
# ncol + 1, nrow, ncol. `chr`, `num`, `int`: the strings (names, levels, values), doubles and
# integers (logicals, codes, sparse indices) in the same order. NULL where a node has no such
# form (complex numbers, another S4 class, a list column): the bridge then converts node by node.
cc_flat <- function(x) {
  node <- integer(); chr <- character(); num <- double(); int <- integer()
  kinds <- c(double = 2L, integer = 3L, logical = 4L, character = 5L)
  atomic <- function(x) {
    kind <- kinds[typeof(x)]
    if (is.na(kind)) stop("no flat form")
    dim <- attr(x, "dim")
    node <<- c(node, kind, length(x), !is.null(names(x)), !is.null(attributes(x)), length(dim), dim)
    if (!is.null(names(x))) chr <<- c(chr, names(x))
    switch(typeof(x), double = num <<- c(num, x), character = chr <<- c(chr, x),
           int <<- c(int, as.integer(x)))
  }
  factor <- function(x) {
    node <<- c(node, 6L, length(x), nlevels(x), is.ordered(x))
    int <<- c(int, unclass(x)); chr <<- c(chr, levels(x))
  }
  walk <- function(x) {
    if (is.null(x)) return(node <<- c(node, 0L))
    if (isS4(x)) {
      if (!is(x, "Matrix")) stop("no flat form")
      parts <- cc_sparse_parts(x)
      node <<- c(node, 8L, length(parts[[1]]), length(parts[[2]]), parts[[4]])
      int <<- c(int, parts[[1]], parts[[2]]); num <<- c(num, parts[[3]])
    } else if (inherits(x, "factor")) factor(x)
    else if (inherits(x, "data.frame")) {
      rn <- attr(x, "row.names")
      node <<- c(node, 7L, length(x), .row_names_info(x, 2L), is.character(rn))
      chr <<- c(chr, names(x), if (is.character(rn)) rn)
      for (col in x) if (is.factor(col)) factor(col) else atomic(col)
    } else if (typeof(x) %in% c("list", "expression")) {
      node <<- c(node, 1L, length(x), !is.null(names(x)))
      if (!is.null(names(x))) chr <<- c(chr, names(x))
      for (e in as.list(x)) walk(e)
    } else atomic(x)
  }
  tryCatch({ walk(x); list(node, chr, num, int) }, error = function(e) NULL)
}
