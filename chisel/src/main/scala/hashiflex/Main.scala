package hashiflex

import circt.stage.ChiselStage

import scala.collection.mutable

/** `./mill hashiflex.run --design build/design.json --out build/rtl`: elaborate a design.json into Verilog and
  * write hw_params.json beside it. Output is written to a temporary folder and moved into place only when
  * everything succeeded, so a failed run leaves nothing half-written.
  */
object Main {
  val usage: String =
    """usage: hashiflex --design DESIGN.json --out DIR [--design DESIGN2.json --out DIR2 ...]
      |
      |Elaborate hashiflex designs (written by `hashiflex export`) into SystemVerilog. Several
      |--design/--out pairs elaborate several designs in one JVM.
      |
      |  --design FILE   design.json to elaborate (validated on read)
      |  --out DIR       output folder: <top>.sv and hw_params.json (replaced atomically)
      |  --timing        print firtool's pass timings (for big designs)
      |  --keep-fir      keep the FIRRTL (<top>.fir) beside the Verilog
      |  --help          show this message
      |""".stripMargin

  final case class Args(design: os.Path, out: os.Path)

  def parseArgs(args: Seq[String], cwd: os.Path = os.pwd): Either[String, Seq[Args]] = {
    def go(rest: List[String], acc: Vector[Args]): Either[String, Seq[Args]] = rest match {
      case Nil if acc.isEmpty                       => Left("missing --design FILE")
      case Nil                                      => Right(acc)
      case "--design" :: d :: "--out" :: o :: tail  => go(tail, acc :+ Args(os.Path(d, cwd), os.Path(o, cwd)))
      case "--design" :: _ :: Nil                   => Left("missing --out DIR")
      case "--design" :: _ :: other :: _            => Left(s"expected --out DIR after --design FILE, found $other")
      case (flag :: Nil) if flag == "--design"      => Left(s"$flag needs a value")
      case other :: _                               => Left(s"unknown argument: $other")
    }
    go(args.toList, Vector.empty)
  }

  val firtoolOpts: Seq[String] = Seq("-disable-all-randomization", "-strip-debug-info",
    "--lowering-options=disallowLocalVariables,disallowPackedArrays,locationInfoStyle=none")

  /** Elaborate `design` into `out`; returns the hw_params JSON written there.
    *
    * Two phases, so the big ones fit in memory: Chisel writes the circuit as FIRRTL and lets go of it (the JVM
    * gives the heap back: see forkArgs in build.sc), then firtool (the version Chisel pins, through
    * firtool-resolver) lowers it to SystemVerilog in its own process. `timing`: firtool prints its pass times.
    */
  def elaborate(design: DesignSpec, out: os.Path, timing: Boolean = false, keepFir: Boolean = false): ujson.Obj = {
    val layers = Pipeline.plan(design)
    val top = s"Hashiflex_${design.name}"
    val tmp = out / os.up / s".${out.last}.tmp-${ProcessHandle.current().pid()}"
    os.remove.all(tmp)
    os.makeDir.all(tmp)
    try {
      val t0 = System.nanoTime()
      val (_, modules) = ModuleTable.collect(
        ChiselStage.emitCHIRRTLFile(if (design.npu.isDefined) new Accelerator(design) else Pipeline(design),
          Array("--target-dir", tmp.toString)))
      val fir = tmp / s"$top.fir"
      if (!os.isFile(fir)) throw new IllegalStateException(s"Chisel wrote no $fir")
      System.gc()
      val t1 = System.nanoTime()
      val firtool = firtoolresolver.Resolve(chisel3.BuildInfo.firtoolVersion.getOrElse(
        throw new IllegalStateException("this Chisel names no firtool version")), false) match {
        case Right(bin) => bin.path.toString
        case Left(msg)  => throw new IllegalStateException(s"cannot find firtool: $msg")
      }
      val cmd = Seq(firtool, fir.toString, "-format=fir", "-o", (tmp / s"$top.sv").toString) ++ firtoolOpts ++
        (if (timing) Seq("-mlir-timing") else Nil)
      val r = os.proc(cmd).call(cwd = tmp, check = false, stderr = os.Pipe, mergeErrIntoOut = true)
      if (r.exitCode != 0) throw new IllegalStateException(s"firtool failed (${r.exitCode}):\n${r.out.text().takeRight(4000)}")
      if (timing) print(r.out.text())
      if (!keepFir) os.remove(fir)
      println(f"  chisel ${(t1 - t0) / 1e9}%.1f s, firtool ${(System.nanoTime() - t1) / 1e9}%.1f s")
      val params = hwParams(design, layers, top)
      params("modules") = ujson.Arr.from(modules)
      os.write(tmp / "hw_params.json", ujson.write(params, indent = 2) + "\n")
      os.remove.all(out)
      os.move(tmp, out)
      params
    } finally os.remove.all(tmp)
  }

  /** Register stages on the longest path from the input to the output. */
  def latencyStages(d: DesignSpec, layers: Seq[LayerHw]): Int = {
    val depth = mutable.Map("input" -> 0)
    for ((l, h) <- d.layers.zip(layers)) {
      depth(l.name) = l.reads.map(depth).max + h.stages
    }
    depth(d.layers.last.name)
  }

  /** The NPU's figures for hw_params.json: schedule, array, memory and the load port's status codes. */
  def npuParams(n: NpuSpec): ujson.Obj = ujson.Obj(
    "module" -> n.moduleName,
    "cycles_per_image" -> n.cyclesPerImage,
    "schedule_cycles" -> n.schedule,
    "lanes" -> n.lanes,
    "width" -> n.width,
    "macs" -> n.macs,
    "acc_width" -> n.accWidth,
    "weight_memory_words" -> 2 * n.schedule,
    "weight_memory_word_bits" -> n.macs * n.weightBits,
    "memory_bits" -> n.memoryBits.toDouble,
    "image_header_words" -> NpuStatus.HeaderWords,
    "magic" -> NpuStatus.Magic.toDouble,
    "status_codes" -> ujson.Obj.from(NpuStatus.table.map { case (k, v) => k -> ujson.Num(v) }))

  def hwParams(d: DesignSpec, layers: Seq[LayerHw], top: String): ujson.Obj = ujson.Obj(
    "format" -> "hashiflex.hw_params",
    "version" -> 1,
    "design" -> d.name,
    "top" -> top,
    "verilog" -> s"$top.sv",
    "ii_cycles_per_image" -> d.iiCycles,
    "backbone_ii_cycles" -> d.backboneIi,
    "npu" -> d.npu.map(npuParams).getOrElse(ujson.Null),
    "input_parallelism" -> d.input.par,
    "latency_stages" -> latencyStages(d, layers),
    "adders" -> layers.map(_.adders).sum,
    "adders_unshared" -> layers.map(_.unshared).sum,
    "comparators" -> layers.map(_.comparators).sum,
    "adder_bits" -> layers.map(_.bits).sum,
    "register_bits" -> layers.map(_.registerBits).sum,
    "line_buffer_bits" -> layers.map(_.lineBufferBits).sum,
    "adder_levels_per_stage" -> d.levelsPerStage,
    "out_width" -> d.layers.last.outFmt.width,
    "out_signed" -> d.layers.last.outFmt.signed,
    "layers" -> ujson.Arr.from(layers.map(l => ujson.Obj(
      "name" -> l.name, "op" -> l.op, "out_width" -> l.outWidth, "adders" -> l.adders, "adders_unshared" -> l.unshared, "adder_bits" -> l.bits, "comparators" -> l.comparators, "stages" -> l.stages,
      "beats_in" -> l.beatsIn, "beats_out" -> l.beatsOut, "parallelism" -> l.parallelism,
      "register_bits" -> l.registerBits, "line_buffer_bits" -> l.lineBufferBits,
      "fifo_depth" -> (if (l.inputFifos.nonEmpty) ujson.Obj("inputs" -> ujson.Arr.from(l.inputFifos.map(ujson.Num(_))))
                       else ujson.Obj("src" -> l.fifos._1, "skip" -> l.fifos._2)))))
  )

  def run(args: Seq[String]): Int = {
    if (args.contains("--help") || args.contains("-h")) { println(usage); return 0 }
    val timing = args.contains("--timing")
    val keepFir = args.contains("--keep-fir")
    parseArgs(args.filterNot(a => a == "--timing" || a == "--keep-fir")) match {
      case Left(msg) =>
        System.err.println(s"error: $msg\n\n$usage"); 2
      case Right(jobs) =>
        try {
          // validate every design before elaborating any, so a bad one stops the batch before it writes
          val designs = jobs.map(a => Design.load(a.design) -> a.out)
          designs.foreach { case (d, _) => Pipeline.plan(d) }
          for ((d, out) <- designs) {
            val t0 = System.nanoTime()
            val p = elaborate(d, out, timing, keepFir)
            println(f"elaborated ${d.name}: ${p("adders").num.toInt} adders (${p("adders_unshared").num.toInt} without sharing), ${p("ii_cycles_per_image").num.toInt} cycles/image, " +
              f"${p("latency_stages").num.toInt} pipeline stages in ${(System.nanoTime() - t0) / 1e9}%.1f s -> $out")
          }
          0
        } catch {
          case e: DesignError =>
            System.err.println(s"error: ${e.getMessage}"); 1
        }
    }
  }

  def main(args: Array[String]): Unit = {
    val rc = run(args.toSeq)
    if (rc != 0) sys.exit(rc)
  }
}
