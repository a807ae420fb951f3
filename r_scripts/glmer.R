# The R side of glmm-crosscheck: glmer (lme4 1.1-31) fits, deviance functions and a glmmTMB
# referee, returned as plain lists that crosscheck/rbridge.py converts to Python.
#
# Sourced by the bridge; also usable on its own:
#   Rscript r_scripts/glmer.R --help
#   Rscript r_scripts/glmer.R lme4 cbpp 'cbind(incidence, size - incidence) ~ period + (1 | herd)' binomial 1
#   R> source("r_scripts/glmer.R"); str(cc_glmer_fit(lme4::cbpp, "<formula>", "binomial"))
#
# Every cc_*_fit / cc_devfun* function returns a record
#   list(ok = TRUE/FALSE, error = <message or NULL>, warnings = <chr>, messages = <chr>, value = ...)
# and never signals an error, warning or message itself. The fits' records also say whether an
# error was this script's own (harness = TRUE: the model was fitted, turning it into a record
# failed) rather than the fitting function's refusal of the model. Formulas arrive as strings that the
# Python side has validated; cc_formula still refuses anything but a single `~` call of the
# grammar's operators and functions (cc_formula_calls).

suppressPackageStartupMessages({
  library(Matrix)
  library(lme4)
})

# --------------------------------------------------------------------------------------------
# conditions as data

# A fresh (copied) plain double vector that stays a vector in Python (lme4 updates some of its
# vectors in place).
cc_vec <- function(x) I(c(as.vector(x, "double")))

# A named vector that stays named when empty (no fixed effects: `y ~ 0 + (1 | g)`), so that
# Python gets a dict.
cc_named <- function(x) {
  names(x) <- as.character(names(x))
  x
}

cc_text <- function(cond) sub("\n$", "", conditionMessage(cond))

# Evaluate `expr`; errors, warnings and messages become fields of the returned record.
cc_capture <- function(expr) {
  warnings <- character()
  messages <- character()
  on_warning <- function(w) {
    warnings <<- c(warnings, cc_text(w))
    invokeRestart("muffleWarning")
  }
  on_message <- function(m) {
    messages <<- c(messages, cc_text(m))
    invokeRestart("muffleMessage")
  }
  record <- function(ok, error, value)
    list(ok = ok, error = error, warnings = I(warnings), messages = I(messages), value = value)
  tryCatch({
    value <- withCallingHandlers(expr, warning = on_warning, message = on_message)
    record(TRUE, NULL, value)
  }, error = function(e) record(FALSE, cc_text(e), NULL))
}

# Fit with `fit()` and make the model a record with `post(model, texts)`. An error in `post` is
# this script's failure, not a verdict about the model: the record then has harness = TRUE.
cc_fit_record <- function(fit, post) {
  fitted <- cc_capture(cc_collect(fit()))
  if (!fitted$ok) return(c(fitted, harness = FALSE))
  out <- cc_capture(post(fitted$value$value, fitted$value$texts))
  out$warnings <- I(c(fitted$warnings, out$warnings))
  out$messages <- I(c(fitted$messages, out$messages))
  c(out, harness = !out$ok)
}

# Evaluate `expr` and note the texts of its warnings and messages, in order, letting them
# propagate (to an enclosing cc_capture).
cc_collect <- function(expr) {
  texts <- character()
  note <- function(cond) texts <<- c(texts, cc_text(cond))
  value <- withCallingHandlers(expr, warning = note, message = note)
  list(value = value, texts = texts)
}

# --------------------------------------------------------------------------------------------
# model specification

cc_families <- c("binomial", "poisson", "Gamma", "inverse.gaussian", "gaussian")

# The calls a formula may hold: reference_impl/formula.py's grammar. The model frame evaluates
# them, so anything else is refused first, also when these functions are called directly.
cc_formula_calls <- c("~", "+", "-", "*", "/", "^", ":", "|", "||", "(", "I", "offset", "cbind",
                      "log", "exp", "sqrt", "abs")

cc_check_calls <- function(expr) {
  if (is.call(expr)) {
    fn <- expr[[1L]]
    if (!is.name(fn) || !(as.character(fn) %in% cc_formula_calls))
      stop("function '", deparse1(fn), "' is not allowed in a formula")
    for (arg in as.list(expr)[-1L]) cc_check_calls(arg)
  } else if (!is.name(expr) && !is.numeric(expr)) {
    stop("a ", typeof(expr), " constant is not allowed in a formula")
  }
  invisible(expr)
}

cc_formula <- function(formula) {
  stopifnot(is.character(formula), length(formula) == 1L)
  expr <- str2lang(formula)
  if (!is.call(expr) || !identical(expr[[1L]], as.name("~")) || length(expr) != 3L)
    stop("not a two-sided formula: ", formula)
  f <- eval(cc_check_calls(expr), baseenv())
  environment(f) <- new.env(parent = globalenv())
  f
}

cc_family <- function(family, link = NULL) {
  if (!(family %in% cc_families)) stop("unsupported family: ", family)
  fun <- get(family, envir = asNamespace("stats"), mode = "function")
  if (is.null(link)) fun() else do.call(fun, list(link = link))
}

cc_column <- function(data, column, role) {
  if (is.null(column)) return(NULL)
  if (!(column %in% names(data))) stop(role, " column '", column, "' is not in the data")
  as.name(column)
}

# The unevaluated call `fit(formula, data = data, family = family, <args>, weights = <col>,
# offset = <col>)`; evaluated in an environment that binds only `data`, `family` and `bound`
# (functions the call names, e.g. glmer keeping its deviance function).
cc_model_call <- function(fit, data, formula, family, link, weights, offset, ..., bound = list()) {
  cl <- as.call(c(list(fit, cc_formula(formula), data = quote(data), family = quote(family)),
                  list(...)))
  cl$weights <- cc_column(data, weights, "weights")
  cl$offset <- cc_column(data, offset, "offset")
  env <- list2env(c(list(data = data, family = cc_family(family, link)), bound), parent = globalenv())
  function() eval(cl, env)
}

cc_glmer_call <- function(data, formula, family, link, nAGQ, weights, offset, control, ...,
                          glmer = NULL) {
  ctrl <- do.call(lme4::glmerControl, as.list(control))
  cc_model_call(if (is.null(glmer)) quote(lme4::glmer) else quote(glmer), data, formula, family, link,
                weights, offset, nAGQ = nAGQ, control = ctrl, ...,
                bound = if (!is.null(glmer)) list(glmer = glmer))
}

# --------------------------------------------------------------------------------------------
# glmer fits

# -2 x saturated log-likelihood, the constant lme4 1.1-31 drops for nAGQ > 1 (spec §4.3), as lme4's
# own response module gives it (aic - deviance at the fit); NA where it depends on mu (families
# with a dispersion parameter). The harness computes it from the data too and compares the two.
cc_saturated <- function(m) {
  if (!(family(m)$family %in% c("binomial", "poisson"))) return(NA_real_)
  m@resp$aic() - sum(residuals(m, "deviance")^2)
}

cc_ranef <- function(m) {
  lapply(ranef(m, condVar = TRUE), function(re) list(
    levels = I(rownames(re)), terms = I(colnames(re)),
    values = unname(as.matrix(re)), condvar = unname(attr(re, "postVar"))))
}

cc_optinfo <- function(m) {
  oi <- m@optinfo
  list(optimizer = oi$optimizer, feval = as.integer(oi$feval),
       conv_opt = as.integer(oi$conv$opt), conv_lme4 = I(as.character(oi$conv$lme4$messages)),
       optimizer_message = oi$message, optimizer_warnings = I(as.character(unlist(oi$warnings))),
       derivs = if (!is.null(oi$derivs))
         list(gradient = I(oi$derivs$gradient), Hessian = oi$derivs$Hessian))
}

# No optimizer failure in either stage and no convergence warning of checkConv.
cc_converged <- function(m, texts) {
  oi <- m@optinfo
  oi$conv$opt == 0 && all(oi$conv$lme4$code == 0) &&
    !any(startsWith(texts, "convergence code"))
}

cc_glmer_record <- function(m, texts) {
  cmp <- m@devcomp$cmp
  nAGQ <- as.integer(m@devcomp$dims[["nAGQ"]])
  V <- cc_collect(as.matrix(vcov(m)))
  rx <- cc_capture(cc_named(sqrt(diag(as.matrix(vcov(m, use.hessian = FALSE))))))
  texts <- c(texts, V$texts)
  X <- getME(m, "X")
  c(list(
    fixef = cc_named(fixef(m)), theta = getME(m, "theta"),
    minus2loglik_raw = -2 * as.numeric(logLik(m)), saturated_lme4 = cc_saturated(m),
    objective = unname(cmp["dev"]), deviance = deviance(m),
    se = cc_named(sqrt(diag(V$value))), vcov = unname(V$value),
    se_rx = rx$value, se_rx_warnings = rx$warnings,
    ranef = cc_ranef(m), fitted = cc_vec(fitted(m)),
    u = cc_vec(getME(m, "u")), b = cc_vec(getME(m, "b")),
    converged = cc_converged(m, texts), messages = I(texts),
    ldL2 = unname(cmp["ldL2"]), ussq = unname(cmp["ussq"]), drsum = unname(cmp["drsum"]),
    wrss = unname(cmp["wrss"]), ldRX2 = unname(cmp["ldRX2"]), pwrss = unname(cmp["pwrss"]),
    aic_resp = m@resp$aic(),
    X = unname(X), X_names = I(as.character(colnames(X))), Zt = getME(m, "Zt"),
    theta_lower = cc_vec(getME(m, "lower")), nAGQ = nAGQ, versions = cc_versions()),
    cc_optinfo(m))
}

# Fit glmer; `weights` and `offset` name columns of `data`, `control` is a list of
# glmerControl() arguments. Record value: see cc_glmer_record; with `keep_devfun`, also `devfun`:
# the deviance function the fit optimized, registered and described as cc_devfun's (so that the
# harness need not build it again with devFunOnly = TRUE, which runs stage 1 a second time).
cc_glmer_fit <- function(data, formula, family, link = NULL, nAGQ = 1L, weights = NULL,
                         offset = NULL, control = NULL, keep_devfun = FALSE) {
  keeping <- if (keep_devfun) cc_glmer_keeping(nAGQ)
  post <- if (keep_devfun) function(m, texts) c(cc_glmer_record(m, texts), list(devfun = keeping$kept()))
          else cc_glmer_record
  cc_fit_record(function() cc_glmer_call(data, formula, family, link, nAGQ, weights, offset, control,
                                         glmer = keeping$glmer)(),
                post)
}

# lme4::glmer itself, its deviance function kept: glmer's own body run with mkGlmerDevfun and
# updateGlmerDevfun wrapped to note the function each returns and describe it then, before an
# optimizer evaluates it (as glmer(devFunOnly = TRUE) returns it); nothing else differs.
# `kept()` registers the last one noted (stage 2's for nAGQ >= 1).
cc_glmer_keeping <- function(nAGQ) {
  noted <- NULL
  note <- function(f, stage_nAGQ) {
    noted <<- list(f = f, description = cc_devfun_describe(f, stage_nAGQ))
    f
  }
  glmer <- lme4::glmer
  environment(glmer) <- list2env(list(
    mkGlmerDevfun = function(...) note(lme4::mkGlmerDevfun(...), 0L),
    updateGlmerDevfun = function(...) note(lme4::updateGlmerDevfun(...), nAGQ)),
    parent = environment(lme4::glmer))
  list(glmer = glmer, kept = function() cc_devfun_register(noted$f, noted$description))
}

# --------------------------------------------------------------------------------------------
# deviance functions (spec §9)

cc_devfuns <- new.env()
cc_devfun_id <- local({
  n <- 0L
  function() sprintf("devfun%d", n <<- n + 1L)
})

# Build glmer(..., devFunOnly = TRUE) and register it. Record value: id, nAGQ, lp0, start (the
# stage-2 start c(theta, delb) for nAGQ >= 1, the initial theta for nAGQ = 0), xst (NM steps,
# nAGQ >= 1 only), lower, X_names; all read before any evaluation.
cc_devfun <- function(data, formula, family, link = NULL, nAGQ = 1L, weights = NULL,
                      offset = NULL, control = NULL) {
  cc_capture({
    f <- cc_glmer_call(data, formula, family, link, nAGQ, weights, offset, control,
                       devFunOnly = TRUE)()
    cc_devfun_register(f, cc_devfun_describe(f, nAGQ))
  })
}

cc_devfun_describe <- function(f, nAGQ) {
  rho <- environment(f)
  nth <- length(rho$pp$theta)
  stage2 <- nAGQ > 0
  list(nAGQ = as.integer(nAGQ), lp0 = cc_vec(rho$lp0),
       start = cc_vec(if (stage2) c(rho$pp$theta, rho$pp$delb) else rho$pp$theta),
       xst = if (stage2) cc_vec(0.2 * c(rep(0.1, nth), pmin(sqrt(diag(rho$pp$unsc())), 10))),
       lower = cc_vec(rho$lower), X_names = I(as.character(colnames(rho$pp$X))))
}

cc_devfun_register <- function(f, description) {
  id <- cc_devfun_id()
  assign(id, f, envir = cc_devfuns)
  c(list(id = id), description)
}

cc_devfun_get <- function(id) {
  if (!exists(id, envir = cc_devfuns, inherits = FALSE))
    stop("no deviance function '", id, "'")
  get(id, envir = cc_devfuns)
}

# State after one evaluation (spec §4.4); every vector is copied, as lme4 updates them in place.
cc_devfun_state <- function(rho, value) {
  pp <- rho$pp
  resp <- rho$resp
  list(value = value, u = cc_vec(pp$u(1)), b = cc_vec(pp$b(1)), mu = cc_vec(resp$mu),
       eta = cc_vec(resp$eta), ldL2 = pp$ldL2(), ussq = pp$sqrL(1), aic = resp$aic(),
       drsum = resp$resDev(), wrss = resp$wrss(), beta = cc_vec(pp$delb), unsc = pp$unsc())
}

# Evaluate deviance function `id` at each row of `pars` (a matrix, or a vector for one point);
# value: one record per row whose value is cc_devfun_state.
cc_devfun_eval <- function(id, pars) {
  cc_capture({
    f <- cc_devfun_get(id)
    pars <- if (is.null(dim(pars))) matrix(pars, nrow = 1L) else pars
    lapply(seq_len(nrow(pars)), function(i)
      cc_capture(cc_devfun_state(environment(f), f(pars[i, ]))))
  })
}

# Forget the deviance functions named in `id` (one or several: a case's are dropped in one call).
cc_devfun_drop <- function(id) {
  cc_capture({
    for (i in id) cc_devfun_get(i)
    rm(list = id, envir = cc_devfuns)
    TRUE
  })
}

# PIRLS of deviance function `id` at `pars`, iteration by iteration (spec §3.2, §9). lme4 prints
# its own trace with `verbose` (> 2: a "pdev=" line per iteration; > 10: a line per step-halving),
# to 6 digits; pdev after iteration k to full precision is read from a run stopped by maxit = k.
# Every run restarts from the same predictor state (delu, delb: a first-iteration halving uses it).
# Value: lines (lme4's trace), pdev, halvings (per iteration), iterations, error (PIRLS failure
# or NULL) and state (cc_devfun_state of the complete run, NULL on failure).
cc_devfun_trace <- function(id, pars) {
  cc_capture({
    f <- cc_devfun_get(id)
    rho <- environment(f)
    saved <- list(verbose = rho$verbose, maxit = rho$maxit, delu = rho$pp$delu, delb = rho$pp$delb)
    on.exit({
      rho$verbose <- saved$verbose
      rho$maxit <- saved$maxit
    })
    run <- function(maxit, verbose) {
      rho$pp$setDelu(saved$delu)
      rho$pp$setDelb(saved$delb)
      rho$maxit <- maxit
      rho$verbose <- verbose
      tryCatch(f(pars), error = function(e) e)
    }
    lines <- capture.output(value <- run(saved$maxit, 11L))
    failed <- inherits(value, "error")
    state <- if (!failed) cc_devfun_state(rho, value)
    step <- cumsum(startsWith(lines, "*** pwrssUpdate step"))
    n <- max(step, 0L)
    halvings <- tabulate(step[startsWith(lines, "step-halving iteration")], n)
    pdev <- vapply(seq_len(n), function(k) {
      run(k, 0L)
      rho$resp$resDev() + rho$pp$sqrL(1)
    }, 0)
    run(saved$maxit, 0L)
    list(lines = I(lines), pdev = cc_vec(pdev), halvings = I(as.integer(halvings)),
         iterations = n, error = if (failed) cc_text(value), state = state)
  })
}

# --------------------------------------------------------------------------------------------
# glmmTMB referee (Laplace)

# lme4's theta for one term: the lower-triangular Cholesky factor of the covariance matrix,
# column-wise (relative to sigma = 1: binomial and Poisson only), named as lme4 names it.
cc_tmb_theta <- function(Sigma, group) {
  L <- t(chol(Sigma))
  nm <- colnames(Sigma)
  idx <- which(lower.tri(L, diag = TRUE), arr.ind = TRUE)
  names <- ifelse(idx[, 1] == idx[, 2], paste(group, nm[idx[, 1]], sep = "."),
                  paste(group, nm[idx[, 1]], nm[idx[, 2]], sep = "."))
  setNames(L[idx], names)
}

cc_glmmtmb_record <- function(m, texts) {
  V <- vcov(m)$cond
  vc <- glmmTMB::VarCorr(m)$cond
  list(fixef = glmmTMB::fixef(m)$cond,
       theta = unlist(unname(Map(cc_tmb_theta, vc, names(vc)))),
       minus2loglik_raw = -2 * as.numeric(logLik(m)), se = sqrt(diag(V)), vcov = unname(V),
       fitted = cc_vec(fitted(m)),
       converged = m$fit$convergence == 0 && isTRUE(m$sdr$pdHess),
       messages = I(texts), optimizer = "nlminb", feval = as.integer(m$fit$evaluations[[1]]),
       nAGQ = 1L, versions = cc_versions())
}

cc_glmmtmb_fit <- function(data, formula, family, link = NULL, weights = NULL, offset = NULL) {
  if (!requireNamespace("glmmTMB", quietly = TRUE))
    return(c(cc_capture(stop("glmmTMB is not installed")), harness = TRUE))
  cc_fit_record(function() cc_model_call(quote(glmmTMB::glmmTMB), data, formula, family, link,
                                         weights, offset)(),
                cc_glmmtmb_record)
}

# --------------------------------------------------------------------------------------------
# data sets and versions

cc_is_name <- function(x) is.character(x) && length(x) == 1L && make.names(x) == x

# Data set `name` of installed package `pkg`, as a data.frame.
cc_dataset <- function(pkg, name) {
  if (!cc_is_name(pkg) || !cc_is_name(name)) stop("not a package/data set name: ", pkg, "::", name)
  env <- new.env()
  utils::data(list = name, package = pkg, envir = env)
  if (!exists(name, envir = env, inherits = FALSE)) stop("no data set ", pkg, "::", name)
  as.data.frame(get(name, envir = env))
}

# Read once per R session (every fit's record carries them; reading the DESCRIPTION files took
# ~5 ms a call): the packages loaded in a session do not change.
cc_versions <- local({
  known <- NULL
  function() {
    if (is.null(known)) {
      pkgs <- c("lme4", "Matrix", "minqa", "glmmTMB")
      pkgs <- pkgs[nzchar(vapply(pkgs, function(p) system.file(package = p), ""))]
      known <<- c(R = paste(R.version$major, R.version$minor, sep = "."),
                  vapply(pkgs, function(p) utils::packageDescription(p, fields = "Version"), ""))
    }
    known
  }
})

# --------------------------------------------------------------------------------------------
# command line

cc_main <- function(args) {
  if (length(args) < 4L || args[1L] %in% c("-h", "--help")) {
    cat("usage: Rscript glmer.R <pkg> <dataset> <formula> <family> [nAGQ]\n",
        "fits glmer and prints the record that cc_glmer_fit returns\n", sep = "")
    return(invisible())
  }
  nAGQ <- if (length(args) >= 5L) as.integer(args[5L]) else 1L
  str(cc_glmer_fit(cc_dataset(args[1L], args[2L]), args[3L], args[4L], nAGQ = nAGQ))
}

if (sys.nframe() == 0L) cc_main(commandArgs(trailingOnly = TRUE))
